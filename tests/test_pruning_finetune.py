"""Pruning really removes channels with every criterion; fine-tuning resumes to the same weights in a fresh process."""
import copy
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch.utils.data import DataLoader, TensorDataset

from robust_prune.allocation import Allocation, allocate
from robust_prune.attacks import AttackSpec, adversarial_batch, perturb
from robust_prune.data import get_dataset, get_loaders
from robust_prune.finetune import Callback, finetune
from robust_prune.models import create_model, load_checkpoint, read_checkpoint, save_checkpoint
from robust_prune.groups import ModelGroups
from robust_prune.pruning import CRITERIA, PruneReport, _grad_batches, accumulate_gradients, criterion_name, importance, prune


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
    n_before, example = sum(p.numel() for p in model.parameters()), torch.zeros(1, 1, 8, 8)
    macs_before = tp.utils.count_ops_and_params(model, example)[0]
    alloc = allocate(None, model, 0.5, "uniform")
    rep = prune(model, alloc, criterion, grad_data=batch)
    after = conv_widths(model)
    assert sum(after.values()) < sum(before.values())
    assert rep.params_after < rep.params_before and rep.macs_after < rep.macs_before
    assert rep.params_before == n_before and rep.params_after == sum(p.numel() for p in model.parameters())
    assert (rep.macs_before, rep.macs_after) == (macs_before, tp.utils.count_ops_and_params(model, example)[0])
    assert rep.params_removed == pytest.approx(1 - rep.params_after / n_before)
    assert {g: c[1] for g, c in rep.channels.items()} == {g: after[g] for g in rep.channels if g in after}
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


class KilledAtStep(Callback):
    "Ends the process's training abruptly (as Ctrl-C would) right after optimiser step `n`."
    def __init__(self, n): self.n = n
    def on_batch_end(self, run, loss):
        if run.step == self.n: raise KeyboardInterrupt


RESUME = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(int(sys.argv[3]))  # bit-exact equality needs the same CPU reduction order as the first process
    from robust_prune.data import get_loaders
    from robust_prune.finetune import finetune
    from robust_prune.models import create_model, save_checkpoint
    small = get_loaders("digits", batch_size=32, train_subset=256, seed=0)
    model = create_model("digits_resnet", seed=0)
    h = finetune(model, small.train, method="trades", attack="pgd:eps=0.1,steps=2", epochs=3, lr=0.05, progress=False,
                 seed=0, checkpoint_dir=sys.argv[1], resume=True, checkpoint_steps=3)
    assert len(h) == 3, len(h)
    save_checkpoint(model, sys.argv[2], history=h.to_dict())
""")


@pytest.mark.parametrize("where", ["after epoch 2", "at batch 5 of epoch 2"])
def test_interrupted_run_resumed_in_a_fresh_process_ends_with_the_same_weights(tmp_path, where):
    small = get_loaders("digits", batch_size=32, train_subset=256, seed=0)  # 8 batches an epoch
    kw = dict(method="trades", attack="pgd:eps=0.1,steps=2", epochs=3, lr=0.05, progress=False, seed=0)
    full = create_model("digits_resnet", seed=0)
    hist = finetune(full, small.train, **kw)
    part = create_model("digits_resnet", seed=0)
    ck = tmp_path / "ck"
    if where == "after epoch 2":
        h = finetune(part, small.train, callbacks=[StopAfter(2)], checkpoint_dir=ck, checkpoint_steps=3, **kw)
        assert len(h) == 2
    else:  # the last checkpoint was written after batch 3 of epoch 2; batches 4 and 5 are lost and redone
        with pytest.raises(KeyboardInterrupt):
            finetune(part, small.train, callbacks=[KilledAtStep(8 + 5)], checkpoint_dir=ck, checkpoint_steps=3, **kw)
        assert read_checkpoint(ck / "last.pt")["meta"]["training"]["midway"]["batches"] == 3
    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    out = subprocess.run([sys.executable, str(script), str(ck), str(tmp_path / "resumed.pt"), str(torch.get_num_threads())],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    resumed, meta = load_checkpoint(tmp_path / "resumed.pt")
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(hist.epochs, meta["history"]["epochs"]):  # the resumed epoch's loss and accuracy count every batch once
        assert (a["loss"], a["train_acc"]) == (b["loss"], b["train_acc"])
    # it did resume there (a run started over would end with the same weights too)
    assert meta["history"]["resumed"] == [{"epoch": 3, "batch": 0} if where == "after epoch 2" else {"epoch": 2, "batch": 3}]


def test_prune_refuses_a_ratio_outside_zero_to_one_and_takes_zero():
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"^A pruning ratio must be in \[0, 1\), got {bad}\.$"):
            prune(create_model("digits_resnet", seed=0), bad)
    zero = create_model("digits_resnet", seed=0)
    rep = prune(zero, 0.0)
    assert rep.params_after == rep.params_before and rep.channels == {g: [c, c] for g, (c, _) in rep.channels.items()}


def test_prune_refuses_steps_that_are_not_a_whole_number_of_at_least_one():
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=rf"steps must be an integer >= 1, got {bad}\."):
            prune(create_model("digits_resnet", seed=0), 0.3, steps=bad)


# --- criteria, gradients and reports, pinned exactly ---------------------------------------------------------------

def digits_xy(n, start=0):
    ds = get_dataset("digits", train=False)
    return (torch.stack([ds[i][0] for i in range(start, start + n)]),
            torch.tensor([int(ds[i][1]) for i in range(start, start + n)]))


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def test_criterion_names_take_the_documented_aliases_and_list_the_choices_when_unknown():
    assert {a: criterion_name(a) for a in ("magnitude", "Magnitude", "l2-norm", "L2_norm", "l1-norm", "obd", "OBD", "LAMP")} == {
        "magnitude": "l2", "Magnitude": "l2", "l2-norm": "l2", "L2_norm": "l2", "l1-norm": "l1", "obd": "hessian",
        "OBD": "hessian", "LAMP": "lamp"}
    with pytest.raises(ValueError, match=r"^Unknown pruning criterion 'fisher'; choose one of: random, l1, l2, lamp, taylor, hessian\.$"):
        criterion_name("fisher")


def test_importance_defaults_to_l2_and_l1_l2_lamp_score_channels_as_torch_pruning_with_p_1_2_2():
    model = create_model("digits_resnet", seed=0)
    dg = tp.DependencyGraph().build_dependency(model, torch.zeros(1, 1, 8, 8))
    group = dg.get_pruning_group(model.layer2[0].conv1, tp.prune_conv_out_channels, idxs=list(range(32)))
    ref = {"l1": tp.importance.MagnitudeImportance(p=1)(group), "l2": tp.importance.MagnitudeImportance(p=2)(group),
           "lamp": tp.importance.LAMPImportance(p=2)(group)}
    # the three references really differ from each other and from the next power, so the checks below can tell them apart
    assert not torch.allclose(ref["l1"], ref["l2"])
    assert not torch.allclose(ref["l2"], tp.importance.MagnitudeImportance(p=3)(group))
    assert not torch.allclose(ref["lamp"], tp.importance.LAMPImportance(p=3)(group))
    assert torch.allclose(importance()(group), ref["l2"]) and torch.allclose(importance("magnitude")(group), ref["l2"])
    for c in ("l1", "l2", "lamp"):
        assert torch.allclose(importance(c)(group), ref[c]), c
    assert isinstance(importance("random"), tp.importance.RandomImportance)
    assert isinstance(importance("obd"), tp.importance.GroupHessianImportance)


def test_grad_batches_split_an_adversarial_batch_into_exactly_batches_disjoint_chunks_in_order(batch):
    model = create_model("digits_resnet", seed=0)
    for k in (1, 4, 64):
        chunks = _grad_batches(model, batch, "none", k)
        assert [len(y) for _, y in chunks] == [64 // k] * k
        assert torch.equal(torch.cat([x for x, _ in chunks]), batch.x_adv)
        assert torch.equal(torch.cat([y for _, y in chunks]), batch.y)
    # accumulate_gradients' default of 4 batches uses all 64 samples
    assert accumulate_gradients(model, importance("taylor"), batch) == 64


def test_taylor_gradients_of_an_xy_pair_are_the_summed_loss_gradients_with_stale_gradients_dropped():
    model = create_model("digits_resnet", seed=0)
    x, y = digits_xy(12)
    ref = copy.deepcopy(model).eval()
    F.cross_entropy(ref(x), y, reduction="sum").backward()
    model.unused = torch.nn.Parameter(torch.ones(3))  # a parameter the loss never reaches
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)  # stale gradients from earlier training
    assert model.training
    assert accumulate_gradients(model, importance("taylor"), (x, y)) == 12
    assert model.training, "the model's mode was not restored"
    assert model.unused.grad is None
    got = dict(model.named_parameters())
    for n, q in ref.named_parameters():
        assert torch.allclose(got[n].grad, q.grad, atol=1e-5), n
    # a list [x, y] is the same pair
    again = copy.deepcopy(model)
    assert accumulate_gradients(again, importance("taylor"), [x, y]) == 12
    got = dict(again.named_parameters())
    assert all(torch.allclose(got[n].grad, q.grad, atol=1e-5) for n, q in ref.named_parameters())


def test_loader_batches_are_attacked_with_the_batch_index_as_seed_and_only_the_first_batches_used():
    x, y = digits_xy(40)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)  # 5 batches, in order
    spec = "pgd:eps=0.1,steps=2"  # a random start: the seed matters
    model = create_model("digits_resnet", seed=0)
    ref = copy.deepcopy(model)
    adv = [(perturb(ref, xb, yb, spec, seed=b), yb) for b, (xb, yb) in enumerate(loader) if b < 2]
    ref.zero_grad(set_to_none=True)
    ref.eval()
    for xa, ya in adv:
        F.cross_entropy(ref(xa), ya, reduction="sum").backward()
    assert accumulate_gradients(model, importance("taylor"), loader, grad_attack=spec, batches=2) == 16
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), n
    # the attack changed the gradients: clean batches give others
    clean = copy.deepcopy(model)
    accumulate_gradients(clean, importance("taylor"), loader, batches=2)
    assert not torch.allclose(clean.conv1.weight.grad, model.conv1.weight.grad)
    # defaults: no attack, 4 batches; any iterable of (x, y) batches is a loader
    batches = list(loader)
    plain = copy.deepcopy(model)
    assert accumulate_gradients(plain, importance("taylor"), batches) == 32
    ref = copy.deepcopy(model)
    ref.zero_grad(set_to_none=True)
    ref.eval()
    F.cross_entropy(ref(x[:32]), y[:32], reduction="sum").backward()
    assert all(torch.allclose(p.grad, q.grad, atol=1e-5) for p, q in zip(plain.parameters(), ref.parameters()))
    with pytest.raises(ValueError, match=r"^grad_data yielded no batch\.$"):
        accumulate_gradients(model, importance("taylor"), [])


def test_hessian_sums_squared_per_sample_gradients_over_at_most_hessian_samples(batch):
    model = create_model("digits_resnet", seed=0)
    x, y = digits_xy(6)
    imp = importance("hessian")
    assert accumulate_gradients(model, imp, (x, y), hessian_samples=4) == 4
    ref = copy.deepcopy(model).eval()
    expected = {n: 0 for n, _ in ref.named_parameters()}
    for i in range(4):
        ref.zero_grad(set_to_none=True)
        F.cross_entropy(ref(x[i:i + 1]), y[i:i + 1]).backward()
        for n, q in ref.named_parameters():
            expected[n] = expected[n] + q.grad ** 2
    names = {p: n for n, p in model.named_parameters()}
    assert sorted(names[p] for p in imp._accu_grad) == sorted(expected)
    for p, s in imp._accu_grad.items():
        assert torch.allclose(s, expected[names[p]], rtol=1e-4, atol=1e-10), names[p]
    assert set(imp._counter.values()) == {4}
    # the cap counts samples across chunks of a split batch; by default it is 64
    assert accumulate_gradients(model, importance("hessian"), batch, batches=4, hessian_samples=20) == 20
    assert accumulate_gradients(model, importance("hessian"), batch, batches=4, hessian_samples=1000) == 64
    x70, y70 = digits_xy(70)
    assert accumulate_gradients(model, importance("hessian"), (x70, y70)) == 64


def test_accumulate_gradients_moves_cpu_batches_to_the_models_device():
    x, y = digits_xy(4)  # on the CPU
    for crit in ("taylor", "hessian"):
        model = create_model("digits_resnet", seed=0).to("meta")  # another device, without needing a GPU
        assert accumulate_gradients(model, importance(crit), (x, y)) == 4, crit


def test_prune_defaults_to_l2_in_one_step_with_seed_zero_and_reports_what_it_did():
    a, b = create_model("digits_resnet", seed=0), create_model("digits_resnet", seed=0)
    ra, rb = prune(a, 0.3), prune(b, 0.3, "l2")
    assert same_weights(a, b) and ra.channels == rb.channels
    assert (ra.criterion, ra.steps, ra.rule, ra.ratios, ra.round_to) == ("l2", 1, "uniform-channels", {}, None)
    assert isinstance(ra.seconds, float) and 0 < ra.seconds < 60
    widths = ModelGroups(create_model("digits_resnet", seed=0)).channels
    assert {g: c[0] for g, c in ra.channels.items()} == widths and all(c[1] < c[0] for c in ra.channels.values())
    # the random criterion is seeded with 0 unless told otherwise
    r0, r0b, r1 = (create_model("digits_resnet", seed=0) for _ in range(3))
    prune(r0, 0.5, "random")
    prune(r0b, 0.5, "random", seed=0)
    prune(r1, 0.5, "random", seed=1)
    assert same_weights(r0, r0b) and not same_weights(r0, r1)


def test_prune_takes_a_group_dict_as_a_manual_allocation_and_refuses_one_naming_no_group():
    model = create_model("digits_resnet", seed=0)
    names = ModelGroups(model).names
    rep = prune(model, {"conv1": 0.25, "layer3.0.conv1": 0.5})
    assert rep.rule == "manual" and rep.ratios == {"conv1": 0.25, "layer3.0.conv1": 0.5}
    assert rep.channels["conv1"] == [16, 12] and rep.channels["layer3.0.conv1"] == [64, 32]
    assert model.conv1.out_channels == 12 and model.layer3[0].conv1.out_channels == 32
    assert all(rep.channels[g][0] == rep.channels[g][1] for g in names if g not in ("conv1", "layer3.0.conv1"))
    with pytest.raises(ValueError, match=r"^The allocation names no group: nothing to prune \(groups of this model: "
                                         + ", ".join(names).replace(".", r"\.") + r"\)\.$"):
        prune(create_model("digits_resnet", seed=0), {})


def test_an_allocation_solved_with_another_round_to_warns_and_its_rule_and_ratios_are_reported():
    model = create_model("digits_resnet", seed=0)
    alloc = Allocation(ratios={"layer2.0.conv1": 0.3, "layer3.1.conv1": 0.3}, rule="param", round_to=None)
    with pytest.warns(UserWarning, match=r"^The allocation was solved with round_to=None but pruning uses round_to=8; "
                                         r"channel counts \(and the parameter target\) may differ\.$"):
        rep = prune(model, alloc, round_to=8)
    assert rep.rule == "param" and rep.ratios == alloc.ratios and rep.round_to == 8
    assert [rep.channels[g][1] % 8 for g in alloc.ratios] == [0, 0]  # 30% of 32 and 64 channels, rounded to eights
    assert all(rep.channels[g][1] < rep.channels[g][0] for g in alloc.ratios)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same rounding, or a plain dict: no warning
        prune(create_model("digits_resnet", seed=0), Allocation(ratios={"conv1": 0.3}, round_to=8), round_to=8)
        prune(create_model("digits_resnet", seed=0), {"conv1": 0.3}, round_to=8)


def test_round_to_ignored_layers_and_example_inputs_reach_the_pruner():
    model = create_model("digits_resnet", seed=0)
    rep = prune(model, 0.3, round_to=8, ignored_layers=["conv1"])
    assert rep.round_to == 8 and "conv1" not in rep.channels and model.conv1.out_channels == 16
    assert rep.channels and all(after % 8 == 0 and after < before for before, after in rep.channels.values())
    # a plain model that has never seen an input: pruning traces it with the example inputs given, and prunes a
    # hidden linear layer as well as the convolution
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    rep = prune(net, 0.5, example_inputs=torch.rand(2, 1, 8, 8))
    assert rep.channels == {"0": [8, 4], "3": [32, 16]} and net[3].out_features == 16
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_pruning_history_accumulates_over_successive_prunes():
    model = create_model("digits_resnet", seed=0)
    prune(model, 0.2)
    first = list(model.pruning_history)
    prune(model, 0.2)
    assert len(first) > 0 and len(model.pruning_history) == 2 * len(first) and model.pruning_history[:len(first)] == first


def test_gradient_criteria_in_prune_use_grad_data_grad_attack_and_grad_batches():
    x, y = digits_xy(48)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)  # 6 batches

    def pruned(criterion, **kw):
        model = create_model("digits_resnet", seed=0)
        prune(model, 0.5, criterion, **kw)
        return model

    # one attacked loader batch is the same as handing over that batch attacked
    first = (perturb(create_model("digits_resnet", seed=0), x[:8], y[:8], "fgsm:eps=0.1", seed=0), y[:8])
    one = pruned("taylor", grad_data=loader, grad_attack="fgsm:eps=0.1", grad_batches=1)
    assert same_weights(one, pruned("taylor", grad_data=first))
    assert not same_weights(one, pruned("taylor", grad_data=loader, grad_attack="fgsm:eps=0.1", grad_batches=4))
    assert not same_weights(one, pruned("taylor", grad_data=loader, grad_batches=1))
    # by default: 4 clean batches
    default = pruned("taylor", grad_data=loader)
    assert same_weights(default, pruned("taylor", grad_data=(x[:32], y[:32])))
    assert not same_weights(default, pruned("taylor", grad_data=(x[:40], y[:40])))
    # the Hessian choice follows the data its squared gradients come from
    h = pruned("hessian", grad_data=(x[:16], y[:16]))
    assert same_weights(h, pruned("obd", grad_data=(x[:16], y[:16])))
    assert not same_weights(h, pruned("hessian", grad_data=(x[16:32], y[16:32])))


def test_a_torch_pruning_failure_while_removing_channels_is_one_value_error_that_suggests_ignored_layers():
    class DetachedConv(torch.nn.Conv2d):  # a hand-written layer that uses its weight without letting gradients reach it
        def forward(self, x): return self._conv_forward(x, self.weight.detach(), self.bias)
    model = create_model("digits_resnet", seed=0)
    model.layer2[0].conv1.__class__ = DetachedConv  # so the Taylor score finds no gradient there
    with pytest.raises(ValueError, match=r"^torch-pruning cannot prune this model \(AttributeError: .*\); leave the block "
                                         r"that holds it whole with ignored_layers=\[\.\.\.\], or use another architecture\.$"):
        prune(model, 0.5, "taylor", grad_data=digits_xy(8))


def test_prune_report_table_text_and_chart_show_channels_before_after_and_kept():
    rep = PruneReport("l2", 1000, 700, 5000, 2000, channels={"conv1": [16, 12], "fc1": [3, 1]}, steps=2, seconds=1.34,
                      rule="uniform")
    assert rep.params_removed == pytest.approx(0.3) and rep.macs_removed == pytest.approx(0.6)
    df = rep.to_frame()
    assert list(df.columns) == ["before", "after", "kept"] and df.index.name == "group" and list(df.index) == ["conv1", "fc1"]
    assert df.before.tolist() == [16, 3] and df.after.tolist() == [12, 1] and df.kept.tolist() == pytest.approx([0.75, 1 / 3])
    table = ("       before  after  kept\n"
             "group                     \n"
             "conv1      16     12 0.750\n"
             "fc1         3      1 0.333")
    assert repr(rep) == ("PruneReport(l2, uniform, 2 step(s)): params 1,000 -> 700 (-30.0%), "
                         "MACs 5,000 -> 2,000 (-60.0%), 1.3 s\n" + table)
    rep.rule = None
    assert repr(rep).splitlines()[0] == "PruneReport(l2, 2 step(s)): params 1,000 -> 700 (-30.0%), MACs 5,000 -> 2,000 (-60.0%), 1.3 s"
    fig = rep.plot()
    assert [(b.type, b.name, list(b.x), list(b.y)) for b in fig.data] == [
        ("bar", "before", ["conv1", "fc1"], [16, 3]), ("bar", "after", ["conv1", "fc1"], [12, 1])]
    assert (fig.layout.barmode, fig.layout.title.text, fig.layout.height) == ("overlay", "channels per group (l2)", 340)


def test_hessian_prune_ranks_channels_by_torch_pruning_hessian_of_the_mean_squared_per_sample_gradients():
    x, y = digits_xy(16)
    model = create_model("digits_resnet", seed=0)
    prune(model, 0.5, "hessian", grad_data=(x, y))
    ref = create_model("digits_resnet", seed=0).eval()
    sums = {}
    for i in range(16):
        ref.zero_grad(set_to_none=True)
        F.cross_entropy(ref(x[i:i + 1]), y[i:i + 1]).backward()
        for p in ref.parameters():
            sums[p] = sums.get(p, 0) + p.grad ** 2
    imp = tp.importance.HessianImportance()
    imp._accu_grad, imp._counter = sums, {p: 16 for p in sums}
    ModelGroups(ref).make_pruner(ref, imp, 0.5).step()
    assert same_weights(model, ref)
    # not the same as scoring with the gradient of the summed loss (what Taylor accumulates)
    summed = create_model("digits_resnet", seed=0).eval()
    F.cross_entropy(summed(x), y, reduction="sum").backward()
    ModelGroups(summed).make_pruner(summed, tp.importance.HessianImportance(), 0.5).step()
    assert not same_weights(model, summed)


def test_gradient_chunks_of_an_adversarial_batch_use_every_sample_when_the_count_does_not_divide(batch):
    chunks = _grad_batches(create_model("digits_resnet", seed=0), batch, "none", 3)
    assert [len(y) for _, y in chunks] == [22, 21, 21] and torch.equal(torch.cat([y for _, y in chunks]), batch.y)
    assert len(_grad_batches(create_model("digits_resnet", seed=0), batch, "none", 100)) == 64  # one sample each, at most


def test_taylor_scores_frozen_layers_too_and_leaves_them_frozen(batch):
    model, free = create_model("digits_resnet", seed=0), create_model("digits_resnet", seed=0)
    frozen = [n for n, p in model.named_parameters() if n.startswith("layer1.")]  # a block inside the network
    for n, p in model.named_parameters():
        if n in frozen: p.requires_grad_(False)
    alloc = allocate(None, model, 0.5, "uniform")
    prune(model, alloc, "taylor", grad_data=batch)
    prune(free, alloc, "taylor", grad_data=batch)
    assert model.pruning_history == free.pruning_history  # the same channels chosen as with nothing frozen
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == set(frozen)
    assert all(p.grad is None for p in model.parameters())


def test_a_torch_pruning_importance_object_prunes_as_its_criterion_name_and_gradient_ones_get_gradients(batch):
    a, b = create_model("digits_resnet", seed=0), create_model("digits_resnet", seed=0)
    ra, rb = prune(a, 0.4, "l1"), prune(b, 0.4, tp.importance.MagnitudeImportance(p=1))
    assert (rb.criterion, ra.criterion) == ("MagnitudeImportance", "l1")
    assert rb.channels == ra.channels and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    own = tp.importance.GroupTaylorImportance()
    with pytest.raises(ValueError, match="GroupTaylorImportance criterion needs gradients"):
        prune(create_model("digits_resnet", seed=0), 0.4, own)
    c, d = create_model("digits_resnet", seed=0), create_model("digits_resnet", seed=0)
    rc, rd = prune(c, 0.4, "taylor", grad_data=batch), prune(d, 0.4, own, grad_data=batch)
    assert rc.channels == rd.channels and all(torch.equal(p, q) for p, q in zip(c.parameters(), d.parameters()))


def test_a_training_loss_object_trains_as_its_name_does_and_its_own_beta_counts():
    from robust_prune.finetune import TRADES, TrainingLoss, training_loss
    model = create_model("digits_resnet", seed=0).train()
    x, y = next(iter(get_loaders("digits", batch_size=32, seed=0).train))
    spec = AttackSpec("pgd", 0.1, steps=2)
    fresh = lambda: copy.deepcopy(model)  # each call updates batch-norm statistics, which the next attack would see
    torch.manual_seed(0); by_name, _ = training_loss(fresh(), x, y, "trades", spec, beta=2.0)
    torch.manual_seed(0); by_obj, _ = training_loss(fresh(), x, y, TRADES(beta=2.0), spec, beta=6.0)
    torch.manual_seed(0); other, _ = training_loss(fresh(), x, y, TRADES(beta=6.0), spec)
    assert by_obj.item() == by_name.item() != other.item()

    class Seen(TrainingLoss):  # records what it is given: x_adv made by the training attack, within its budget
        name = "seen"
        def loss(self, model, x, y, x_adv):
            self.gap = float((x_adv - x).abs().max())
            logits = model(x_adv)
            return F.cross_entropy(logits, y), logits

    seen = Seen()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    hist = finetune(model, loader, None, method=seen, attack=spec, epochs=1, lr=0.01, progress=False)
    assert 0 < seen.gap <= 0.1 + 1e-6 and hist.method == "seen" and len(hist) == 1
