"""Tests of robust_prune.mrs: planted sensitivities, exact state preservation, search equivalence, bad input, serialisation."""
import copy
import json
import math
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robust_prune.attacks import perturb
from robust_prune.models import create_model
from robust_prune.mrs import (METHODS, LossEvaluator, MRSReport, PrunableGroup, _Feasibility, compute_mrs, initial_state,
                              prunable_groups)

torch.set_num_threads(1)


class Planted(nn.Module):
    "Two parallel convolutions; the head reads only the channels of `critical`, so `redundant` cannot matter."
    def __init__(self):
        super().__init__()
        self.critical = nn.Conv2d(1, 4, 3, padding=1)
        self.redundant = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.cat([self.critical(x), self.redundant(x)], 1).relu()
        return self.head(h.mean((2, 3)))


def _stripes(n, gen):
    "Images whose class is whether the left half is brighter than the right half."
    x = torch.rand(n, 1, 6, 6, generator=gen) * 0.5
    y = torch.randint(0, 2, (n,), generator=gen)
    x[y == 1, :, :, :3] += 0.5
    x[y == 0, :, :, 3:] += 0.5
    return x, y


@pytest.fixture(scope="module")
def planted():
    "A trained planted network, its true initial weights and a fixed adversarial batch against it."
    torch.manual_seed(0)
    model = Planted()
    init = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    x, y = _stripes(512, gen)
    with torch.no_grad():
        model.head.weight[:, 4:] = 0  # the head ignores the redundant branch ...
        model.redundant.weight.mul_(5)  # ... which is far from its initial value, yet irrelevant
    opt = torch.optim.Adam([*model.critical.parameters(), *model.head.parameters()], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        model.head.weight.grad[:, 4:] = 0
        opt.step()
    model.eval()
    xt, yt = _stripes(128, gen)
    x_adv = perturb(model, xt, yt, "pgd:eps=0.05,steps=5", num_classes=2, seed=0)
    return model, init, x_adv, yt


@pytest.mark.parametrize("method", METHODS)
def test_planted_critical_group_outscores_redundant_group(planted, method):
    model, init, x_adv, y = planted
    report = compute_mrs(model, x_adv, y, method=method, init_state=init)
    assert [g.name for g in report.groups] == ["critical", "redundant"]
    assert report["critical"].score > report["redundant"].score
    assert report["redundant"].score == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("search", ["root", "grid", "ordered", "bisect"])
def test_planted_ranking_holds_for_every_search(planted, search):
    model, init, x_adv, y = planted
    report = compute_mrs(model, x_adv, y, init_state=init, search=search, sigma_points=None if search == "root" else 11)
    assert report["critical"].score > 0 and report["redundant"].score == 0


def _small_digits_batch(n=32):
    model = create_model("digits_resnet", seed=1, width=4)
    gen = torch.Generator().manual_seed(0)
    return model, torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def test_ordered_search_returns_exactly_the_grid_minimum_with_fewer_forwards(planted):
    model, init, x_adv, y = planted
    kw = dict(init_state=init, alphas=6, sigma_points=6, draws=4, slices=1, max_batch=4 * len(y))  # one grid point per batch
    grid = compute_mrs(model, x_adv, y, search="grid", **kw)
    ordered = compute_mrs(model, x_adv, y, search="ordered", **kw)
    assert 0 < grid["critical"].score < math.inf
    assert [(g.score, g.alpha, g.sigma) for g in grid.groups] == [(g.score, g.alpha, g.sigma) for g in ordered.groups]
    assert ordered.forwards < grid.forwards


@pytest.mark.parametrize("method", METHODS)
def test_compute_mrs_leaves_state_dict_grads_modes_and_rng_exactly_unchanged(method):
    model, x, y = _small_digits_batch()
    model.train()
    model.layer1.eval()  # a mixed mode must survive too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    rng = torch.get_rng_state()
    compute_mrs(model, x, y, method=method, alphas=4, sigma_points=4, draws=2, noise_draws=2, worst_steps=2)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_residual_coupled_layers_are_one_group_and_groups_partition_the_prunable_weights():
    model = create_model("digits_resnet", seed=0)
    groups = prunable_groups(model, torch.rand(1, 1, 8, 8))
    stem = next(g for g in groups if g.name == "conv1")
    assert {"conv1.weight", "bn1.weight", "layer1.0.conv2.weight", "layer1.1.conv2.weight"} <= set(stem.tensors)
    names = [t for g in groups for t in g.tensors]
    assert len(names) == len(set(names))  # no tensor scored twice
    head = sum(p.numel() for p in model.fc.parameters())
    assert sum(g.params for g in groups) == sum(p.numel() for p in model.parameters()) - head
    assert not any("fc" in t for t in names)
    per_layer = prunable_groups(model, torch.rand(1, 1, 8, 8), per_layer=True)
    assert sorted(t for g in per_layer for t in g.tensors) == sorted(names)
    assert "layer1.0.conv2" in [g.name for g in per_layer]


def test_ignored_layers_by_name_or_module_remove_their_group():
    model = create_model("digits_resnet", seed=0)
    x = torch.rand(1, 1, 8, 8)
    for ignored in (["layer2.0.conv1"], [model.layer2[0].conv1]):
        assert "layer2.0.conv1" not in [g.name for g in prunable_groups(model, x, ignored_layers=ignored)]


def test_batched_evaluation_equals_the_plain_loop():
    model, x, y = _small_digits_batch()
    model.eval()
    P = dict(model.named_parameters())
    g = prunable_groups(model, x[:1])[0]
    stacked = {t: P[t].detach() + 0.1 * torch.randn(5, *P[t].shape) for t in g.tensors}
    batched = LossEvaluator(model, x, y, batch="vmap").losses(stacked)
    looped = LossEvaluator(model, x, y, batch="loop").losses(stacked)
    assert torch.allclose(batched, looped, atol=1e-5)


@pytest.mark.parametrize("arch, shape", [("digits_resnet", (16, 1, 8, 8)), ("resnet18", (4, 3, 32, 32)),
                                         ("vgg16_bn", (4, 3, 32, 32))])
def test_reused_activations_give_the_whole_network_losses_and_exactly_its_gradients(arch, shape):
    model = create_model(arch, "digits" if arch == "digits_resnet" else "cifar10", seed=1).eval()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(*shape, generator=gen), torch.randint(0, 10, (shape[0],), generator=gen)
    P = {n: p.detach() for n, p in model.named_parameters()}
    groups = prunable_groups(model, x[:1])
    for g in (groups[0], groups[len(groups) // 2], groups[-1]):
        stacked = {t: P[t] + 0.1 * torch.randn(3, *P[t].shape, generator=gen) for t in g.tensors}
        for batch in ("vmap", "loop"):
            whole = LossEvaluator(model, x, y, batch=batch, reuse=False)
            part = LossEvaluator(model, x, y, batch=batch)
            part.focus(g.tensors)
            assert part._focus is not None and part._focus.touched < part._focus.total
            # without gradients the reused part runs on channels-last activations: the same sums in another order
            assert torch.allclose(whole.losses(stacked), part.losses(stacked), rtol=1e-5, atol=1e-6)
        leaves = [{t: v[0].clone().requires_grad_(True) for t, v in stacked.items()} for _ in range(2)]
        for ev, lv in zip((whole, part), leaves): ev.loss(lv).backward()
        assert all(torch.equal(leaves[0][t].grad, leaves[1][t].grad) for t in g.tensors)
        # tensors outside the focused group are still honoured (the whole network runs for them)
        other = groups[0] if g is not groups[0] else groups[-1]
        moved = {t: P[t] * 0.5 for t in other.tensors}
        assert torch.equal(whole.loss(moved), part.loss(moved))
        with torch.no_grad(): assert torch.equal(whole.loss(moved), part.loss(moved))


def test_auto_batch_mode_is_the_loop_on_a_cpu_and_settings_record_it():
    model, x, y = _small_digits_batch(8)
    assert LossEvaluator(model.eval(), x, y).batch == "loop"
    r = compute_mrs(model, x, y, method="noise", noise_draws=2)
    assert r.settings["batch"] == "loop" and r.settings["reuse"] is True
    assert compute_mrs(model, x, y, method="noise", noise_draws=2, batch="vmap").settings["batch"] == "vmap"


@pytest.mark.parametrize("batch", ["loop", "vmap"])
def test_early_exit_gives_exactly_the_same_scores_with_fewer_forwards(planted, batch):
    model, init, x_adv, y = planted
    kw = dict(init_state=init, alphas=6, sigma_points=6, draws=4, search="grid", batch=batch)
    full = compute_mrs(model, x_adv, y, early_exit=False, **kw)
    fast = compute_mrs(model, x_adv, y, **kw)
    assert fast.scores == full.scores and fast.settings["early_exit"] and not full.settings["early_exit"]
    assert [(g.alpha, g.sigma) for g in fast.groups] == [(g.alpha, g.sigma) for g in full.groups]
    assert full.forwards == 2 * 36 * 4 and fast.forwards < full.forwards


class _InPlaceResidual(nn.Module):
    "`out.add_(shortcut(x))` writes into a value that does not depend on the shortcut; the ReLU works in place too."
    def __init__(self):
        super().__init__()
        self.main = nn.Conv2d(1, 4, 3, padding=1)
        self.shortcut = nn.Conv2d(1, 4, 1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        out = self.main(x)
        out.add_(self.shortcut(x))
        return self.head(self.relu(out).mean((2, 3)))


def test_in_place_operations_never_modify_the_reused_activations():
    torch.manual_seed(0)
    model = _InPlaceResidual().eval()
    x, y = torch.rand(8, 1, 6, 6), torch.randint(0, 3, (8,))
    P = {n: p.detach() for n, p in model.named_parameters()}
    for names in (["shortcut.weight", "shortcut.bias"], ["main.weight"], ["head.weight"]):
        stacked = {t: P[t] + 0.3 * torch.randn(4, *P[t].shape) for t in names}
        whole = LossEvaluator(model, x, y, batch="loop", reuse=False)
        part = LossEvaluator(model, x, y, batch="loop")
        part.focus(names)
        assert part._focus is not None
        first, again = part.losses(stacked), part.losses(stacked)  # a corrupted cache would change the second call
        assert torch.allclose(whole.losses(stacked), first, rtol=1e-5, atol=1e-6) and torch.equal(first, again)
        with torch.enable_grad():  # the gradient path reads the reused values in their original layout
            assert torch.equal(whole.loss({t: v[0] for t, v in stacked.items()}), part.loss({t: v[0] for t, v in stacked.items()}))


class _DataDependent(nn.Module):
    "Control flow on the data: runs, and torch-pruning can trace it, but torch.fx cannot."
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.conv(x).relu()
        if h.sum() > 0: h = h * 2
        return self.head(h.mean((2, 3)))


def test_a_model_torch_fx_cannot_trace_is_evaluated_whole_with_the_same_scores():
    torch.manual_seed(0)
    model = _DataDependent().eval()
    x, y = torch.rand(8, 1, 6, 6), torch.randint(0, 3, (8,))
    r = compute_mrs(model, x, y, method="noise")
    assert r.settings["reuse"] is False and "torch.fx cannot trace" in r.settings["note"]
    ref = compute_mrs(model, x, y, method="noise", reuse=False)
    assert r.scores == ref.scores
    assert compute_mrs(create_model("digits_resnet", seed=0).eval(), torch.rand(8, 1, 8, 8), y, method="noise").settings["reuse"]


def test_initial_state_reproduces_the_seeded_initialisation_of_create_model():
    trained = create_model("digits_resnet", seed=3)
    with torch.no_grad():
        for p in trained.parameters(): p.add_(1.0)
    theta0 = initial_state(trained, seed=3)
    fresh = dict(create_model("digits_resnet", seed=3).named_parameters())
    assert all(torch.equal(theta0[n], fresh[n]) for n in fresh)


class _ReturnsText(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x): return "not a tensor"


@pytest.mark.parametrize("case, message", [
    ("empty", "The batch is empty"),
    ("nan", "NaN"),
    ("labels", "Labels must lie in [0, 9]"),
    ("untraceable", "torch-pruning cannot trace this model"),
    ("method", "Unknown MRS method"),
    ("ignored", "not a module of the model"),
    ("init", "init_state's 'conv1.weight' has shape"),
    ("batch", "Unknown batch mode"),
    ("odd", "draws must be even"),
    ("slices", "slices (9) cannot exceed the number of images (8)"),
    ("repeats", "repeats must be an integer >= 1"),
    ("refine", "refine must be an integer >= 1"),
    ("refine_z", "refine_z must be a finite number > 0"),
])
def test_bad_input_raises_one_clear_value_error(case, message):
    model, x, y = _small_digits_batch(8)
    kw = {}
    if case == "empty": x, y = x[:0], y[:0]
    if case == "nan": x[0, 0, 0, 0] = float("nan")
    if case == "labels": y[0] = 10
    if case == "untraceable": model, y = _ReturnsText(), y % 2
    if case == "method": kw = dict(method="hessian")
    if case == "ignored": kw = dict(ignored_layers=["layer9"])
    if case == "init": kw = dict(init_state=create_model("digits_resnet", seed=0, width=8))
    if case == "batch": kw = dict(batch="gpu")
    if case == "odd": kw = dict(draws=3)
    if case == "slices": kw = dict(slices=9)
    if case == "repeats": kw = dict(repeats=0)
    if case == "refine": kw = dict(refine=0)
    if case == "refine_z": kw = dict(refine_z=float("nan"))
    with pytest.raises(ValueError) as err:
        compute_mrs(model, x, y, **kw)
    text = str(err.value)
    assert message in text and "\n" not in text


def test_report_round_trips_through_json_including_infinite_scores():
    model, x, y = _small_digits_batch()
    report = compute_mrs(model, x, y, method="noise", noise_draws=2)
    report.groups[0].score = math.inf
    back = MRSReport.from_dict(json.loads(json.dumps(report.to_dict(), allow_nan=False)))
    assert back.to_dict() == report.to_dict()
    assert back.scores == report.scores and back.groups[0].score == math.inf
    assert isinstance(back.groups[1], PrunableGroup)
    assert "layer1.0.conv1" in repr(back) and back.plot().layout.yaxis.type == "log"


def test_the_score_plot_labels_whole_decades_only_and_shows_every_bar_and_interval():
    from robust_prune.mrs import GroupScore
    groups = [GroupScore(n, [n], 100, 8, score=s, samples=smp) for n, s, smp in
              [("a", 1930.0, [1800.0, 2060.0]), ("b", 100.0, None), ("c", 31.8, None)]]
    fig = MRSReport(method="mrs", groups=groups).plot()
    ax = fig.layout.yaxis
    assert ax.type == "log" and ax.dtick == 1  # one tick per decade: no "2" and "5" between them that read as values
    lo, hi = ax.range
    assert lo == int(lo) and hi == int(hi)
    assert 10 ** lo < 31.8  # the smallest bar has a height (its base is the axis bottom)
    assert 10 ** hi >= max(y + e for y, e in zip(fig.data[0].y, fig.data[0].error_y.array))  # and the top interval fits
    b = MRSReport(method="mrs", groups=[GroupScore("b", ["b"], 100, 8, score=100.0)]).plot().layout.yaxis.range
    assert 10 ** b[0] < 100  # a score on a decade is not cut to nothing


@pytest.mark.parametrize("batch, reuse, n", [("loop", True, 32), ("vmap", True, 32), ("loop", False, 30), ("vmap", True, 30)])
def test_sliced_copies_together_cover_the_batch_exactly_once(batch, reuse, n):
    "One copy per slice, all with the model's own weights: the mean of their losses is the whole batch's loss."
    model, x, y = _small_digits_batch(n)
    model.eval()
    g = prunable_groups(model, x[:1])[1]
    ev = LossEvaluator(model, x, y, batch=batch, reuse=reuse, slices=4)
    ev.focus(g.tensors)
    own = {t: dict(model.named_parameters())[t].detach() for t in g.tensors}
    stacked = {t: v.unsqueeze(0).repeat(8, *([1] * v.dim())) for t, v in own.items()}  # two passes over the 4 slices
    losses = ev.losses(stacked)
    whole = F.cross_entropy(model(x), y)
    assert losses.shape == (8,) and torch.allclose(losses[:4].mean(), whole, rtol=1e-5)
    assert torch.allclose(losses[:4], losses[4:])  # copy b sees slice b % 4
    sizes = [len(i) for i in torch.arange(n).tensor_split(4)]
    by_hand = torch.stack([F.cross_entropy(model(x[i]), y[i], reduction="sum") * 4 / n for i in torch.arange(n).tensor_split(4)])
    assert torch.allclose(losses[:4], by_hand, rtol=1e-5, atol=1e-6), sizes
    assert torch.allclose(ev.losses({t: v[:3] for t, v in stacked.items()}, first=1), losses[1:4], rtol=1e-5)


def test_antithetic_draws_are_the_first_half_with_the_sign_flipped():
    from robust_prune.mrs import _Feasibility
    model, x, y = _small_digits_batch(32)
    g = prunable_groups(model, x[:1])[0]
    P = dict(model.named_parameters())
    thF = {t: P[t].detach() for t in g.tensors}
    ev = LossEvaluator(model.eval(), x, y, slices=4)
    c = _Feasibility(ev, thF, thF, [0.0, 1.0], [0.1, 1.0], 6, 1.0, torch.Generator().manual_seed(0), antithetic=True)
    t = next(iter(g.tensors))
    z = c._noise(t, 0, c.copies)
    assert c.copies == 24 and z.shape[0] == 24 and torch.equal(z[12:], -z[:12])
    assert torch.equal(torch.cat([c._noise(t, 0, 8), c._noise(t, 8, 16), c._noise(t, 16, 24)]), z)  # any stage cut
    assert 12 % ev.slices == 0  # so draw c and its mirror c + 12 fall on the same slice



def _refinable(threshold, refine, early_exit=False):
    from robust_prune.mrs import _Feasibility
    model, x, y = _small_digits_batch(32)
    g = prunable_groups(model, x[:1])[0]
    P = dict(model.named_parameters())
    thF = {t: P[t].detach() for t in g.tensors}
    ev = LossEvaluator(model.eval(), x, y, slices=4)
    return _Feasibility(ev, thF, thF, [1.0], [0.3], 6, threshold, torch.Generator().manual_seed(0), early_exit=early_exit,
                        antithetic=True, refine=refine, refine_z=2.0)


def test_the_standard_error_of_a_point_counts_antithetic_pairs_once_and_stratifies_by_slice():
    c = _refinable(1.0, 3)  # 6 passes × 4 slices = 24 draws a block; draw j is on slice j % 4; j and j + 12 form a pair
    v = torch.randn(2, 48, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    se = []
    for row in v:
        pairs = torch.cat([(b[:12] + b[12:]) / 2 for b in row.split(24)])  # 24 pairs, pair k on slice k % 4
        per_slice = [pairs[s::4] for s in range(4)]
        se.append(math.sqrt(sum(float(p.var()) / len(p) for p in per_slice)) / 4)
    assert torch.allclose(c._stderr(v.float()), torch.tensor(se, dtype=torch.float64), rtol=1e-5)


def test_only_a_point_too_close_to_the_threshold_to_decide_gets_more_draws():
    probe = _refinable(1.0, 3)
    seen = {(0, 0): []}
    for b in range(3): probe._block([(0, 0)], seen, b)
    v = torch.cat(seen[(0, 0)]).unsqueeze(0)
    m1, se1 = float(v[:, :24].mean()), float(probe._stderr(v[:, :24]))
    m2, m3 = float(v[:, :48].mean()), float(v.mean())
    assert abs(m1 - m2) < 2 * se1 and m3 != m2  # so a threshold at m2 is too close to call after one block and after two
    assert not torch.equal(probe._noise(next(iter(probe.thF)), 0, 24, 1), probe._noise(next(iter(probe.thF)), 0, 24, 0))
    for threshold, blocks, mean in [(m1 + 5 * se1, 1, m1), (m1 - 5 * se1, 1, m1), (m2, 3, m3)]:
        c = _refinable(threshold, 3)
        c.ev.forwards = 0
        assert c.feasible(0, 0) == (mean <= threshold)
        assert c.ev.forwards == blocks * 6  # passes over the batch
    c = _refinable(m2, 1)  # refine=1: one block, decided on its mean however close
    assert c.feasible(0, 0) == (m1 <= m2) and c.ev.forwards == 6

def test_root_search_returns_exactly_the_grid_minimum_in_every_group():
    "The default search against every point of the same grid, on a trained residual network with nine groups."
    from robust_prune.data import get_loaders
    dls = get_loaders("digits", batch_size=64, seed=0)
    torch.manual_seed(0)
    model = create_model("digits_resnet", dls.info, seed=3, width=4)  # θ⁰ (seed 0) is another initialisation
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        for xb, yb in dls.train:
            opt.zero_grad(); F.cross_entropy(model(xb), yb).backward(); opt.step()
    model.eval()
    x, y = next(iter(dls.test))
    kw = dict(alphas=5, sigma_points=17, draws=2, slices=4, seed=0)
    grid = compute_mrs(model, x[:16], y[:16], search="grid", **kw)
    root = compute_mrs(model, x[:16], y[:16], search="root", **kw)
    assert sum(0 < v < math.inf for v in grid.scores.values()) >= 7
    assert len({g.alpha for g in grid.groups}) >= 2  # optima at several α: the search over α is exercised too
    assert [(g.score, g.alpha, g.sigma) for g in root.groups] == [(g.score, g.alpha, g.sigma) for g in grid.groups]
    assert root.forwards < grid.forwards / 3


def test_default_sigma_grid_steps_one_percent_from_sigma_min_to_one():
    from robust_prune.mrs import _sigma_grid
    s = _sigma_grid(None, 1e-3, None)
    assert s[0] == pytest.approx(1e-3) and s[-1] == 1.0 and len(s) == 696
    assert max(b / a for a, b in zip(s, s[1:])) <= 1.01 + 1e-12


def test_repeats_give_the_mean_of_the_seeds_with_spread_ci_and_error_bars():
    model, x, y = _small_digits_batch()
    kw = dict(alphas=3, sigma_points=9, draws=2, slices=2)
    rep = compute_mrs(model, x, y, repeats=3, seed=5, **kw)
    single = [compute_mrs(model, x, y, seed=s, **kw) for s in (5, 6, 7)]
    for g in rep.groups:
        vals = [r[g.name].score for r in single]
        assert g.samples == vals and g.score == pytest.approx(sum(vals) / 3)
        if all(math.isfinite(v) for v in vals):
            assert g.ci[0] <= g.score <= g.ci[1] and g.std == pytest.approx(torch.tensor(vals).std().item(), rel=1e-6)
    assert rep.settings["seeds"] == [5, 6, 7] and "seed" not in rep.settings and rep.settings["init"] == "seed 0"
    back = MRSReport.from_dict(json.loads(json.dumps(rep.to_dict(), allow_nan=False)))
    assert back.to_dict() == rep.to_dict() and back.groups[0].samples == rep.groups[0].samples
    assert {"std", "ci_low", "ci_high"} <= set(rep.to_frame().columns)
    bars = rep.plot().data[0].error_y
    assert bars.array is not None and len(bars.array) == len(rep)
    assert compute_mrs(model, x, y, **kw).plot().data[0].error_y.array is None
    from robust_prune.widgets import SensitivityExplorer  # the explorer draws the report's own bars, error bars included
    assert SensitivityExplorer(rep).fig.data[0].error_y.array == bars.array


class _Oracle(_Feasibility):
    "A feasibility table read off a given region instead of measured: what the searches decide, alone."
    def __init__(self, alphas, sigmas, region, per_batch):
        self.alphas, self.sigmas, self.dist2, self.table = alphas, sigmas, 1.0, {}
        self.points_per_batch, self.region, self.asked = per_batch, region, []
    def evaluate(self, points):
        for p in points:
            if p not in self.table: self.asked.append(p); self.table[p] = self.region(*p)


def _grid_minimum(alphas, sigmas, region):
    "The smallest α²/σ² over the feasible points, ties to the larger σ and then the smaller α, as (score, α index, σ index)."
    feasible = [(a ** 2 / s ** 2, -js, ia) for ia, a in enumerate(alphas) for js, s in enumerate(sigmas) if region(ia, js)]
    if not feasible: return math.inf, None, None
    obj, mjs, ia = min(feasible)
    return obj, ia, -mjs


def test_every_search_finds_the_grid_minimum_of_a_monotone_region_and_ordered_of_any_region():
    "Feasibility rising with α and falling with σ (what root and bisect assume): all four searches return the grid's minimum; any region: ordered and grid do."
    from robust_prune.mrs import SEARCHES, _alpha_grid, _sigma_grid
    rng = random.Random(0)
    asked = {name: 0 for name in SEARCHES}
    for trial in range(300):
        alphas = _alpha_grid(rng.choice([2, 5, 11, [0.3, 0.6, 1.0]]))  # the last without α = 0: a score of 0 out of reach
        sigmas = _sigma_grid(None, 10 ** -rng.uniform(0.3, 3), rng.choice([1, 2, 7, 40]))
        need = sorted(rng.randint(0, len(alphas)) for _ in sigmas)  # smallest feasible α index per σ (len: none), rising with σ
        regions = {"monotone": lambda ia, js: ia >= need[js]}
        table = {(ia, js): rng.random() < 0.2 for ia in range(len(alphas)) for js in range(len(sigmas))}
        regions["any"] = lambda ia, js: table[(ia, js)]
        for kind, region in regions.items():
            want = _grid_minimum(alphas, sigmas, region)
            for name, search in SEARCHES.items():
                if kind == "any" and name in ("root", "bisect"): continue
                c = _Oracle(alphas, sigmas, region, per_batch=rng.choice([1, 3, 8]))
                search(c)
                assert c.best() == want, (trial, kind, name, need)
                assert len(c.asked) == len(set(c.asked)) <= len(alphas) * len(sigmas)
                if kind == "monotone": asked[name] += len(c.asked)
    grid = asked["grid"]
    assert asked["root"] < grid / 3 and asked["bisect"] < grid / 3 and asked["ordered"] < grid, asked
