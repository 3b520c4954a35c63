"""The `robust-prune` command as a user runs it: help, one-line errors with exit code 2, train then evaluate."""
import json
import shutil
import subprocess

import pytest

EXE = shutil.which("robust-prune")
pytestmark = pytest.mark.skipif(EXE is None, reason="the robust-prune console script is not installed (pip install -e .)")


def run(*args, timeout=600):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_commands():
    out = run("--help")
    assert out.returncode == 0 and "train" in out.stdout and "evaluate" in out.stdout


@pytest.mark.parametrize("args,reason", [
    (["evaluate", "--dataset", "mnist"], "Unknown dataset 'mnist'"),
    (["evaluate", "--checkpoint", "nowhere.pt"], "Checkpoint file not found"),
    (["evaluate", "--attack", "pgd:eps=-1"], "eps must be"),
    (["train", "--arch", "alexnet", "--epochs", "1"], "Unknown architecture"),
    (["train", "--out", "/proc/forbidden/model.pt", "--epochs", "1"], "Cannot write"),
])
def test_bad_input_exits_2_with_one_line_reason(args, reason):
    out = run(*args)
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and reason in lines[0] and "Traceback" not in out.stderr


def test_train_then_evaluate_checkpoint(tmp_path):
    ckpt = tmp_path / "m.pt"
    out = run("train", "--epochs", "1", "--out", str(ckpt), "--attack", "pgd:eps=0.1,steps=2")
    assert out.returncode == 0, out.stderr
    assert ckpt.is_file()
    out = run("evaluate", "--checkpoint", str(ckpt), "--attack", "fgsm:eps=0.1", "--max-samples", "100",
              "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_samples"] == 100 and "FGSM (Linf, 0.1)" in report["robust_acc"]


def test_evaluate_sanity_prints_and_saves_every_gradient_masking_check_flagged(tmp_path):
    ckpt = tmp_path / "m.pt"
    assert run("train", "--epochs", "1", "--out", str(ckpt), "--attack", "pgd:eps=0.1,steps=2").returncode == 0
    out = run("evaluate", "--checkpoint", str(ckpt), "--attack", "pgd:eps=0.1,steps=10", "--max-samples", "32",
              "--sanity", "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    sanity = json.loads((tmp_path / "r.json").read_text())["sanity"]
    assert [c["check"] for c in sanity["checks"]] == ["PGD >= AutoAttack", "black-box Square >= white-box",
                                                       "accuracy -> 0 as eps grows", "more PGD steps never raise accuracy"]
    assert sanity["n_samples"] == 32 and "gradient-masking checks (Linf, eps 0.1, 32 images)" in out.stdout
    for c in sanity["checks"]:  # every check is printed on its own line, flagged when it failed
        line = next(l for l in out.stdout.splitlines() if c["check"] in l)
        assert line.split()[0] == ("ok" if c["passed"] else "FAILED")
