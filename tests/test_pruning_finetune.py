"""Pruning really removes channels with every criterion; fine-tuning resumes to the same weights in a fresh process."""
import subprocess
import sys
import textwrap

import pytest
import torch

from robust_prune.allocation import allocate
from robust_prune.attacks import AttackSpec, adversarial_batch
from robust_prune.data import get_dataset, get_loaders
from robust_prune.finetune import Callback, finetune
from robust_prune.models import create_model, load_checkpoint, save_checkpoint
from robust_prune.pruning import CRITERIA, accumulate_gradients, importance, prune


@pytest.fixture(scope="module")
def batch():
    model = create_model("digits_resnet", seed=0)
    return adversarial_batch(model, get_dataset("digits", train=False), AttackSpec("fgsm", 0.1), n=64)


def conv_widths(model):
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_removes_channels_physically_and_the_model_still_runs(criterion, batch):
    model = create_model("digits_resnet", seed=0)
    before = conv_widths(model)
    alloc = allocate(None, model, 0.5, "uniform")
    rep = prune(model, alloc, criterion, grad_data=batch)
    after = conv_widths(model)
    assert sum(after.values()) < sum(before.values())
    assert rep.params_after < rep.params_before and rep.macs_after < rep.macs_before
    assert abs(rep.params_removed - (1 - rep.params_after / rep.params_before)) < 1e-12
    assert all(a >= 1 for a in after.values())
    assert model(batch.x_adv[:4]).shape == (4, 10)
    assert all(p.grad is None for p in model.parameters()), "gradients used for the criterion were left behind"


def test_gradient_criteria_refuse_to_prune_without_gradients():
    for crit in ("taylor", "hessian"):
        with pytest.raises(ValueError, match="needs gradients"):
            prune(create_model("digits_resnet", seed=0), 0.3, crit)


def test_accumulated_gradients_are_non_zero_and_change_the_taylor_choice(batch):
    model = create_model("digits_resnet", seed=0)
    imp = importance("taylor")
    used = accumulate_gradients(model, imp, batch, batches=2)
    assert used == len(batch.y)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # Taylor and L2 keep different channels of the same network
    a, b = create_model("digits_resnet", seed=0), create_model("digits_resnet", seed=0)
    prune(a, 0.5, "taylor", grad_data=batch)
    prune(b, 0.5, "l2")
    assert not torch.equal(a.conv1.weight, b.conv1.weight)


def test_round_to_and_iterative_steps_give_hardware_friendly_equal_widths(batch):
    one = create_model("digits_resnet", seed=0)
    three = create_model("digits_resnet", seed=0)
    r1 = prune(one, 0.5, "l2", round_to=8)
    r3 = prune(three, 0.5, "l2", round_to=8, steps=3)
    assert all(w % 8 == 0 for n, w in conv_widths(one).items())
    assert conv_widths(one) == conv_widths(three)
    assert r3.steps == 3 and len(three.pruning_history) > len(one.pruning_history)


def test_pruned_model_saves_and_reloads_with_identical_outputs(tmp_path, batch):
    model = create_model("digits_resnet", seed=0).eval()
    prune(model, allocate(None, model, 0.7, "param"), "lamp")
    save_checkpoint(model, tmp_path / "p.pt")
    again, _ = load_checkpoint(tmp_path / "p.pt")
    with torch.no_grad():
        assert torch.equal(model(batch.x_adv), again.eval()(batch.x_adv))


class StopAfter(Callback):
    def __init__(self, n): self.n = n
    def on_epoch_end(self, run, row): run.stop = run.epoch >= self.n


RESUME = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(int(sys.argv[3]))  # bit-exact equality needs the same CPU reduction order as the first process
    from robust_prune.data import get_loaders
    from robust_prune.finetune import finetune
    from robust_prune.models import create_model, save_checkpoint
    small = get_loaders("digits", batch_size=64, train_subset=256, seed=0)
    model = create_model("digits_resnet", seed=0)
    h = finetune(model, small.train, method="trades", attack="pgd:eps=0.1,steps=2", epochs=3, lr=0.05, progress=False,
                 seed=0, checkpoint_dir=sys.argv[1], resume=True)
    assert len(h) == 3, len(h)
    save_checkpoint(model, sys.argv[2])
""")


def test_interrupted_run_resumed_in_a_fresh_process_ends_with_the_same_weights(tmp_path):
    small = get_loaders("digits", batch_size=64, train_subset=256, seed=0)
    kw = dict(method="trades", attack="pgd:eps=0.1,steps=2", epochs=3, lr=0.05, progress=False, seed=0)
    full = create_model("digits_resnet", seed=0)
    finetune(full, small.train, **kw)
    part = create_model("digits_resnet", seed=0)
    h = finetune(part, small.train, callbacks=[StopAfter(2)], checkpoint_dir=tmp_path / "ck", **kw)
    assert len(h) == 2 and (tmp_path / "ck" / "last.pt").is_file()
    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "ck"), str(tmp_path / "resumed.pt"),
                          str(torch.get_num_threads())],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    resumed, _ = load_checkpoint(tmp_path / "resumed.pt")
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
