"""`robust-prune run` keeps its stages on disk: killed (SIGKILL) or interrupted (Ctrl-C) during fine-tuning, the same
command again continues where it stopped and ends with the weights of a run never stopped; stages made with other
settings, another dense model or `--fresh` are removed, never reused."""
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from robust_prune.models import create_model, read_checkpoint
from robust_prune.pipeline import MRPFConfig, RunStages, compare

EXE = shutil.which("robust-prune")
pytestmark = pytest.mark.skipif(EXE is None, reason="the robust-prune console script is not installed (pip install -e .)")

# digits, uniform allocation only (no MRS), 3 epochs of 12 batches, a checkpoint every 2 batches
CONFIG = 'train_attack: "pgd:eps=0.1,steps=3"\neval_attacks: ["pgd:eps=0.1,steps=2"]\n'
ARGS = ["run", "--compare", "uniform", "--epochs", "3", "--sparsity", "0.5", "--eval-samples", "50",
        "--checkpoint-steps", "2", "--quiet"]


def _cmd(tmp, out):
    (tmp / "cfg.yaml").write_text(CONFIG)
    return [EXE, *ARGS, "--config", str(tmp / "cfg.yaml"), "--out", str(out)]


def _run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _weights(path):
    return read_checkpoint(path)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    res = _run(_cmd(tmp, tmp / "out"))
    assert res.returncode == 0, res.stderr[-2000:]
    return _weights(tmp / "out" / "pruned_uniform.pt")


def _midway(ckpt):
    "The checkpoint's place inside an unfinished epoch after the first epoch (None: not there yet, or at an epoch's end)."
    try: training = read_checkpoint(ckpt)["meta"]["training"]
    except (OSError, ValueError): return None
    if not (training.get("midway") and training["history"]["epochs"]): return None
    return {"epoch": len(training["history"]["epochs"]) + 1, "batch": training["midway"]["batches"]}


def _stop_mid_epoch(cmd, ckpt, sig):
    "Start `cmd`, send `sig` once it has written a checkpoint inside epoch 2 or 3; returns (exit code, stderr)."
    kw = dict(preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if sig == signal.SIGINT else {}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    try:
        deadline = time.time() + 300
        while _midway(ckpt) is None and proc.poll() is None and time.time() < deadline: time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be stopped: " + proc.stderr.read()[-2000:]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None: proc.kill()
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_run_stopped_mid_epoch_then_run_again_ends_with_the_uninterrupted_weights(uninterrupted, tmp_path, sig):
    out = tmp_path / "out"
    cmd = _cmd(tmp_path, out)
    rc, err = _stop_mid_epoch(cmd, out / "resume" / "uniform" / "last.pt", sig)
    if sig == signal.SIGINT:
        lines = [l for l in err.splitlines() if l.strip()]
        assert rc == 130 and lines == ["robust-prune run: interrupted; re-run the same command to resume"], err[-2000:]
    else:
        assert rc == -signal.SIGKILL
    where = _midway(out / "resume" / "uniform" / "last.pt")
    assert where is not None and not (out / "pruned_uniform.pt").exists()  # stopped inside an epoch, before the end
    again = _run(cmd)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Resuming: fine-tuning of 'uniform' continues from" in again.stderr
    assert "Resuming: dense evaluation reused" in again.stderr
    resumed = _weights(out / "pruned_uniform.pt")
    # it continued where the checkpoint was (a run started over would end with the same weights too)
    assert json.loads((out / "history_uniform.json").read_text())["resumed"] == [where]
    for k, v in uninterrupted.items():
        assert torch.equal(v, resumed[k]), k
    assert not (out / "resume" / "uniform" / "last.pt").exists()  # finished: the optimiser state is gone, the model stays


def _stages(out, model, resume=True, **kw):
    return RunStages(out, MRPFConfig(output_dir=str(out), progress=False, **kw), model, resume)


def test_stages_of_other_settings_another_model_or_fresh_are_removed_and_the_reason_said(tmp_path, capsys):
    model = create_model("digits_resnet", seed=0)
    calls = []
    make = lambda: calls.append(1) or {"v": len(calls)}
    dump = lambda v, p: p.write_text(str(v["v"]))
    load = lambda p: {"v": int(p.read_text())}
    assert _stages(tmp_path, model).get("s.txt", "stage s", make, dump, load) == {"v": 1}
    # the same settings (progress and checkpoint_steps do not count) and model: reused, said
    assert _stages(tmp_path, model, checkpoint_steps=7).get("s.txt", "stage s", make, dump, load) == {"v": 1}
    assert "Resuming: stage s reused" in capsys.readouterr().err
    assert _stages(tmp_path, model, sparsity=0.5, lr=0.1).get("s.txt", "stage s", make, dump, load) == {"v": 2}
    assert "Starting afresh" in (e := capsys.readouterr().err) and "other settings (lr, sparsity)" in e
    other = create_model("digits_resnet", seed=1)
    assert _stages(tmp_path, other, sparsity=0.5, lr=0.1).get("s.txt", "stage s", make, dump, load) == {"v": 3}
    assert "another dense model" in capsys.readouterr().err
    assert _stages(tmp_path, other, False, sparsity=0.5, lr=0.1).get("s.txt", "stage s", make, dump, load) == {"v": 4}
    assert "(resume=False)" in capsys.readouterr().err
    assert len(calls) == 4


def test_a_run_that_fails_before_any_stage_leaves_no_folder(tmp_path):
    out = tmp_path / "new" / "out"
    res = _run([EXE, "run", "--compare", "uniform,missing-rule", "--quiet", "--out", str(out)])  # found before anything runs
    assert res.returncode == 2 and "Unknown allocation rule 'missing-rule'" in res.stderr and not out.exists()
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable robust-prune checkpoint"):  # found once the run started
        compare(MRPFConfig(checkpoint=str(tmp_path / "text.pt"), output_dir=str(out), progress=False), ["uniform"])
    assert not out.exists()
