"""Tests of robust_prune.mrs: planted sensitivities, exact state preservation, search equivalence, bad input, serialisation."""
import copy
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robust_prune.attacks import perturb
from robust_prune.models import create_model
from robust_prune.mrs import (METHODS, LossEvaluator, MRSReport, PrunableGroup, compute_mrs, initial_state,
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


@pytest.mark.parametrize("search", ["grid", "ordered", "bisect"])
def test_planted_ranking_holds_for_every_search(planted, search):
    model, init, x_adv, y = planted
    report = compute_mrs(model, x_adv, y, init_state=init, search=search)
    assert report["critical"].score > 0 and report["redundant"].score == 0


def _small_digits_batch(n=32):
    model = create_model("digits_resnet", seed=1, width=4)
    gen = torch.Generator().manual_seed(0)
    return model, torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def test_ordered_search_returns_exactly_the_grid_minimum_with_fewer_forwards(planted):
    model, init, x_adv, y = planted
    kw = dict(init_state=init, alphas=6, sigma_points=6, draws=3, max_batch=3 * len(y))  # one grid point per batch
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
    batched = LossEvaluator(model, x, y, batched=True).losses(stacked)
    looped = LossEvaluator(model, x, y, batched=False).losses(stacked)
    assert torch.allclose(batched, looped, atol=1e-5)


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
    ("method", "Unknown method"),
    ("ignored", "not a module of the model"),
    ("init", "init_state's 'conv1.weight' has shape"),
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
