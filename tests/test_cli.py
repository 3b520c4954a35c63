"""The `robust-prune` command as a user runs it: help, one-line errors with exit code 2, train then evaluate."""
import json
import os
import shutil
import subprocess

import pytest

EXE = shutil.which("robust-prune")
pytestmark = pytest.mark.skipif(EXE is None, reason="the robust-prune console script is not installed (pip install -e .)")


def run(*args, timeout=600, env=None):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_help_lists_commands():
    out = run("--help")
    assert out.returncode == 0 and "train" in out.stdout and "evaluate" in out.stdout


@pytest.mark.parametrize("args,reason", [
    (["evaluate", "--dataset", "mnist"], "Unknown dataset 'mnist'"),
    (["evaluate", "--checkpoint", "nowhere.pt"], "Checkpoint file not found"),
    (["evaluate", "--attack", "pgd:eps=-1"], "eps must be"),
    (["train", "--arch", "alexnet", "--epochs", "1"], "Unknown architecture"),
    (["train", "--out", "/proc/forbidden/model.pt", "--epochs", "1"], "Cannot write"),
    (["train", "--arch", "torchvision:no_such_net"], "torchvision has no classification model"),
    (["run", "--arch", "torchvision:resnet18"], "--train-epochs"),
])
def test_bad_input_exits_2_with_one_line_reason(args, reason):
    out = run(*args)
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and reason in lines[0] and "Traceback" not in out.stderr


def test_train_with_profile_then_evaluate_checkpoint(tmp_path):
    ckpt = tmp_path / "m.pt"
    out = run("train", "--epochs", "1", "--out", str(ckpt), "--attack", "pgd:eps=0.1,steps=2", "--profile")
    assert out.returncode == 0, out.stderr
    assert ckpt.is_file()
    table = out.stdout.split("Where training spent its time (1 epoch, ")[1].splitlines()
    stages = {line.split()[0]: float(line.split()[1]) for line in table[2:] if line.startswith("  ")}
    assert list(stages)[:3] == ["data", "attack", "forward/backward"] and stages["attack"] > 0, out.stdout
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


def _env(*paths):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), *filter(None, [env.get("PYTHONPATH")])])
    return env


def test_run_prunes_a_torchvision_model_given_by_spec_at_the_size_asked(tmp_path):
    (tmp_path / "quick.yaml").write_text("train_attack: pgd:eps=0.1,steps=1\nmrs_attack: fgsm:eps=0.1\n")  # the fewest attack steps
    out = run("run", "--config", str(tmp_path / "quick.yaml"), "--arch", "torchvision:resnet18", "--size", "16", "--train-epochs", "1",
              "--sparsity", "0.5", "--compare", "uniform,mrs", "--mrs-method", "rewind", "--mrs-samples", "8", "--epochs", "0",
              "--eval-samples", "16", "--eval-attack", "fgsm:eps=0.1", "--quiet", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["config"]["arch"] == "torchvision:resnet18" and set(report["allocations"]) == {"uniform", "MRPF (per-param)"}
    from robust_prune.models import load_checkpoint
    for name, slug in (("uniform", "uniform"), ("MRPF (per-param)", "mrpf_per-param")):
        model, _ = load_checkpoint(tmp_path / "run" / f"pruned_{slug}.pt")
        cfg = model.arch_config  # torchvision's network behind the data's normalisation, at the asked input size
        assert (cfg["arch"], cfg["input_shape"], type(model.net).__name__) == ("torchvision:resnet18", [1, 16, 16], "ResNet")
        assert abs(report["allocations"][name]["achieved"] - 0.5) <= 0.005 * 0.5
        assert sum(p.numel() for p in model.parameters()) == report["reports"][name]["params"]


TINY_NET = '''
import pathlib
import torch.nn as nn
pathlib.Path(__file__).with_name("imported").touch()  # shows whether this module was imported

def tiny(num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
'''


def test_a_module_function_arch_is_imported_only_with_allow_import(tmp_path):
    (tmp_path / "tinynets.py").write_text(TINY_NET)
    env, marker, ckpt = _env(tmp_path), tmp_path / "imported", tmp_path / "m.pt"
    train = ("train", "--arch", "tinynets:tiny", "--size", "16", "--epochs", "1", "--attack", "pgd:eps=0.1,steps=1", "--out", str(ckpt))
    refusals = [run(*train, env=env), run("run", "--arch", "tinynets:tiny", "--train-epochs", "1", env=env)]
    assert run(*train, "--allow-import", env=env).returncode == 0 and ckpt.is_file() and marker.is_file()
    marker.unlink()
    evaluate = ("evaluate", "--checkpoint", str(ckpt), "--attack", "fgsm:eps=0.1", "--max-samples", "16")
    refusals += [run(*evaluate, env=env), run("mrs", "--checkpoint", str(ckpt), "--mrs-method", "rewind", env=env)]
    for out in refusals:  # one line naming the flag, and the module was never imported
        lines = [l for l in out.stderr.splitlines() if l.strip()]
        assert out.returncode == 2 and len(lines) == 1 and "--allow-import" in lines[0] and "tinynets" in lines[0], out.stderr
    assert not marker.exists()
    out = run(*evaluate, "--allow-import", "--json", str(tmp_path / "r.json"), env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "r.json").read_text())["n_samples"] == 16
    # the full metric's θ⁰ (rewind too) rebuilds the architecture: allowed once the model itself was
    out = run("mrs", "--checkpoint", str(ckpt), "--allow-import", "--mrs-method", "rewind", "--mrs-samples", "8", "--quiet",
              "--json", str(tmp_path / "mrs.json"), env=env)
    assert out.returncode == 0, out.stderr
    groups = json.loads((tmp_path / "mrs.json").read_text())["groups"]
    assert [g["name"] for g in groups] == ["net.0", "net.3"]
