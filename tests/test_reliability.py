"""Bad inputs stopped at the door (images of another shape, float labels, nothing to prune) and a diverging fine-tuning
run stopped before it writes anything (the last good checkpoint survives; the command exits non-zero with one line)."""
import shutil
import subprocess

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from robust_prune.attacks import adversarial_batch, perturb
from robust_prune.evaluation import evaluate
from robust_prune.finetune import Callback, NonFiniteTrainingError, finetune
from robust_prune.models import create_model, read_checkpoint
from robust_prune.mrs import compute_mrs
from robust_prune.pruning import prune


def _images(n=16, channels=1, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def _loader(x, y, batch=8):
    return DataLoader(TensorDataset(x, y), batch_size=batch)


# ------------------------------------------------------------------------------------------- images and labels
_ENTRY_POINTS = {
    "perturb": lambda m, x, y: perturb(m, x, y, "fgsm:eps=0.1"),
    "adversarial_batch": lambda m, x, y: adversarial_batch(m, (x, y), "fgsm:eps=0.1", n=len(y)),
    "evaluate": lambda m, x, y: evaluate(m, _loader(x, y), ["fgsm:eps=0.1"], progress=False, latency=False),
    "compute_mrs": lambda m, x, y: compute_mrs(m, x, y, method="noise", noise_draws=1),
    "finetune": lambda m, x, y: finetune(m, _loader(x, y), method="clean", epochs=1, progress=False),
}


@pytest.mark.parametrize("entry", list(_ENTRY_POINTS))
@pytest.mark.parametrize("channels,size", [(1, 7), (4, 8), (1, 16)])
def test_images_of_another_shape_than_the_model_records_are_refused_naming_both_shapes(entry, channels, size):
    model = create_model("digits_resnet", seed=0, width=4)  # records (1, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _images(channels=channels, size=size)
    with pytest.raises(ValueError, match=rf"takes images of shape \(C, H, W\) = \(1, 8, 8\).*got \({channels}, {size}, {size}\)"):
        _ENTRY_POINTS[entry](model, x, y)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "refused before anything ran"


def test_images_of_the_recorded_shape_pass_every_entry_point():
    model = create_model("digits_resnet", seed=0, width=4)
    x, y = _images()
    for entry, call in _ENTRY_POINTS.items():
        call(model, x, y)  # no error


class _FloatLabels(torch.utils.data.Dataset):
    "A dataset whose labels are floats (3.5, ...): a regression target, or a file read with the wrong dtype."
    def __init__(self, x, y): self.x, self.y = x, y.float() + 0.5
    def __len__(self): return len(self.y)
    def __getitem__(self, i): return self.x[i], float(self.y[i])


def test_adversarial_batch_refuses_float_labels_instead_of_truncating_them():
    model = create_model("digits_resnet", seed=0, width=4)
    x, y = _images()
    with pytest.raises(ValueError, match=r"Labels must be integer class indices, got torch\.float\d+ \(e\.g\. \d\.5\)"):
        adversarial_batch(model, _FloatLabels(x, y), "fgsm:eps=0.1", n=8)
    batch = adversarial_batch(model, TensorDataset(x, y), "fgsm:eps=0.1", n=8)  # integer labels: taken as they are
    assert torch.equal(batch.y, y[:8])


class _HeadOnly(nn.Module):
    "A classifier with nothing but its head: the head is never pruned, so nothing is prunable."
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x): return self.fc(x.flatten(1))


def test_prune_of_a_model_with_no_prunable_group_raises_saying_so():
    net = _HeadOnly()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="no prunable group in this model.*nothing to prune"):
        prune(net, 0.5, example_inputs=torch.zeros(1, 1, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_prune_with_an_allocation_naming_no_group_raises_but_ratio_zero_is_a_valid_baseline():
    model = create_model("digits_resnet", seed=0, width=4)
    with pytest.raises(ValueError, match="names no group: nothing to prune.*conv1"):
        prune(model, {})
    report = prune(model, 0.0)  # the unpruned baseline of a comparison: allowed, and changes nothing
    assert report.params_after == report.params_before


# ------------------------------------------------------------------------------------------- divergence
def _digits(n=128, batch=32):
    x, y = _images(n=n, seed=1)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))


class _Corrupt(Callback):
    "At the end of epoch `at` (after its checkpoint is written) put `value` into one tensor of the model's state."
    def __init__(self, at, tensor, value): self.at, self.tensor, self.value, self.state = at, tensor, value, None
    def on_epoch_end(self, run, row):
        if run.epoch != self.at: return
        self.state = {k: v.clone() for k, v in run.model.state_dict().items()}  # what the checkpoint holds
        with torch.no_grad(): run.model.state_dict()[self.tensor].fill_(self.value)  # state_dict tensors share storage


_KW = dict(method="clean", lr=0.05, schedule="constant", progress=False, seed=0)


def _assert_last_good_checkpoint_kept(path, state, epochs):
    saved = read_checkpoint(path)
    assert all(torch.equal(state[k], saved["state_dict"][k]) for k in state), "last.pt holds the last good epoch"
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    assert len(saved["meta"]["training"]["history"]["epochs"]) == epochs


def test_nan_loss_stops_finetune_and_keeps_the_last_good_checkpoint(tmp_path):
    model = create_model("digits_resnet", seed=0, width=4)
    bad = _Corrupt(2, "conv1.weight", float("nan"))
    with pytest.raises(NonFiniteTrainingError, match=r"loss became NaN or infinite at step 1/4 of epoch 3;.*lr=0\.05.*"
                                                      r"last good checkpoint, '.*last\.pt' \(epoch 2\), is kept"):
        finetune(model, _digits(), epochs=4, callbacks=[bad], checkpoint_dir=tmp_path, **_KW)
    _assert_last_good_checkpoint_kept(tmp_path / "last.pt", bad.state, epochs=2)


def test_non_finite_weights_with_a_finite_loss_stop_finetune_before_the_checkpoint(tmp_path):
    model = create_model("digits_resnet", seed=0, width=4)
    bad = _Corrupt(1, "bn1.running_var", float("inf"))  # train-mode forwards never read it: the loss stays finite
    with pytest.raises(NonFiniteTrainingError, match=r"weights became NaN or infinite in epoch 2;.*\(epoch 1\), is kept"):
        finetune(model, _digits(), epochs=3, callbacks=[bad], checkpoint_dir=tmp_path, **_KW)
    _assert_last_good_checkpoint_kept(tmp_path / "last.pt", bad.state, epochs=1)


def test_a_learning_rate_far_too_high_is_named_and_no_checkpoint_is_written(tmp_path):
    model = create_model("digits_resnet", seed=0, width=4)
    with pytest.raises(NonFiniteTrainingError, match=r"lr=1e\+06\) is probably too high.*no checkpoint was written"):
        finetune(model, _digits(), epochs=2, checkpoint_dir=tmp_path, **{**_KW, "lr": 1e6})
    assert not (tmp_path / "last.pt").exists()


EXE = shutil.which("robust-prune")


@pytest.mark.skipif(EXE is None, reason="the robust-prune console script is not installed (pip install -e .)")
def test_cli_train_that_diverges_exits_1_with_one_line_and_saves_nothing(tmp_path):
    out = tmp_path / "m.pt"
    res = subprocess.run([EXE, "train", "--lr", "1e6", "--epochs", "2", "--method", "clean", "--batch-size", "256",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    # stderr holds the progress bar's redraws (lines starting "epoch k/n") and the error
    lines = [l for l in res.stderr.replace("\r", "\n").splitlines() if l.strip() and not l.startswith("epoch ")]
    assert len(lines) == 1 and lines[0].startswith("robust-prune train: error: Training diverged:"), res.stderr
    assert "Traceback" not in res.stderr and not out.exists()


@pytest.mark.cuda
def test_cuda_nan_loss_is_found_on_the_device_and_the_last_good_checkpoint_kept(tmp_path):
    "On a GPU the loss is not read at every step: the epoch's sums carry the first bad step to the end of the epoch."
    model = create_model("digits_resnet", seed=0, width=4).cuda()
    bad = _Corrupt(2, "conv1.weight", float("nan"))
    with pytest.raises(NonFiniteTrainingError, match=r"at step 1/4 of epoch 3;.*\(epoch 2\), is kept"):
        finetune(model, _digits(), epochs=4, callbacks=[bad], checkpoint_dir=tmp_path, **{**_KW, "method": "trades",
                                                                                           "attack": "pgd:eps=0.1,steps=2"})
    _assert_last_good_checkpoint_kept(tmp_path / "last.pt", {k: v.cpu() for k, v in bad.state.items()}, epochs=2)


@pytest.mark.skipif(EXE is None, reason="the robust-prune console script is not installed (pip install -e .)")
def test_cli_ctrl_c_during_training_ends_with_one_line_exit_130_and_no_traceback(tmp_path):
    import signal
    import threading
    import time
    out = tmp_path / "m.pt"
    # a terminal's Ctrl-C: SIGINT at its default disposition in the child (a shell's background job, as CI may run
    # this in, ignores SIGINT, and Python then rightly leaves it ignored)
    proc = subprocess.Popen([EXE, "train", "--epochs", "50", "--method", "pgd-at", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        err = bytearray()
        reader = threading.Thread(target=lambda: [err.extend(b) for b in iter(lambda: proc.stderr.read1(4096), b"")], daemon=True)
        reader.start()
        deadline = time.time() + 120
        while b"epoch 1/50" not in err and time.time() < deadline and proc.poll() is None: time.sleep(0.1)
        assert b"epoch 1/50" in err, "training never started"  # Ctrl-C lands inside the training loop, not at import
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None: proc.kill()  # never leave a 50-epoch run behind
    text = err.decode()
    lines = [l for l in text.replace("\r", "\n").splitlines() if l.strip() and not l.startswith("epoch ")]
    assert rc == 130 and lines == ["robust-prune train: interrupted"], text[-2000:]
    assert "Traceback" not in text and not out.exists()
