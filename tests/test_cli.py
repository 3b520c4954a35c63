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
