"""Allocation meets its parameter target as real torch-pruning counts it, respects bounds and locks, round-trips JSON."""
import copy
import math
import random

import pytest
import torch
import torch_pruning as tp

from robust_prune.allocation import Allocation, CostModel, RULES, allocate, pruning_ratio_dict, rule_weights
from robust_prune.models import create_model, unprunable_layers


def prune_copy(model, alloc):
    m = copy.deepcopy(model).eval()
    tp.pruner.MetaPruner(m, torch.zeros(1, *m.arch_config["input_shape"]), tp.importance.MagnitudeImportance(p=2),
                         pruning_ratio=0.0, pruning_ratio_dict=pruning_ratio_dict(alloc, m),
                         ignored_layers=unprunable_layers(m)).step()
    return m


@pytest.fixture(scope="module")
def resnet18():
    model = create_model("resnet18", "cifar10", seed=0).eval()
    cm = CostModel(model)
    rng = random.Random(0)
    scores = {g: 10 ** rng.uniform(-3, 2) for g in cm.groups}
    return model, cm, scores


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("rule", ["uniform", "per-param"])
def test_resnet18_pruned_by_torch_pruning_is_within_half_percent_of_target(resnet18, target, rule):
    model, cm, scores = resnet18
    alloc = allocate(scores, model, target, rule, r_max=0.95, cost_model=cm)
    pruned = prune_copy(model, alloc)
    _, params = tp.utils.count_ops_and_params(pruned, torch.zeros(1, 3, 32, 32))
    removed = (cm.total_params - params) / cm.dense_prunable("params")
    assert abs(removed - target) <= 0.005 * target
    assert params == cm.count(alloc.ratios)["params"]  # the prediction is exact
    mods = dict(pruned.named_modules())
    for g in cm.groups:  # every group keeps at least one channel
        m = mods[g]
        assert (m.out_channels if hasattr(m, "out_channels") else m.out_features) >= 1
    with torch.no_grad():
        assert pruned(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("arch", ["vgg16_bn", "mobilevit_xs"])
def test_prediction_equals_torch_pruning_count_on_other_architectures(arch):
    model = create_model(arch, "cifar10", seed=0).eval()
    cm = CostModel(model)
    alloc = allocate(None, model, 0.5, "param", cost_model=cm)
    _, params = tp.utils.count_ops_and_params(prune_copy(model, alloc), torch.zeros(1, 3, 32, 32))
    assert params == cm.count(alloc.ratios)["params"]


def test_mac_target_is_met_on_resnet18(resnet18):
    model, cm, scores = resnet18
    alloc = allocate(scores, model, 0.6, "inverse", target_of="macs", cost_model=cm)
    macs, _ = tp.utils.count_ops_and_params(prune_copy(model, alloc), torch.zeros(1, 3, 32, 32))
    removed = (cm.dense["macs"] - macs) / cm.dense_prunable("macs")
    assert abs(removed - 0.6) <= 0.01


def test_bounds_min_channels_and_locks_hold_while_others_rebalance(resnet18):
    model, cm, scores = resnet18
    g0, g1 = cm.groups[0], cm.groups[1]
    alloc = allocate(scores, model, 0.7, "inverse", r_min=0.1, r_max=0.6, min_channels=8, locked={g0: 0.0, g1: 0.25},
                     cost_model=CostModel(model, min_channels=8))
    assert alloc[g0] == 0.0 and alloc[g1] == 0.25 and alloc.locked == sorted([g0, g1])
    kept = cm.kept(alloc.ratios)
    for g, r in alloc.ratios.items():
        if g in (g0, g1): continue
        assert 0.1 - 1e-9 <= r <= 0.6 + 1e-9 and kept[g] >= 8
    assert abs(alloc.achieved - 0.7) <= 0.005 * 0.7


def test_target_out_of_reach_names_reachable_range(resnet18):
    model, cm, scores = resnet18
    with pytest.raises(ValueError, match=r"reachable range is 0\.0% to \d+\.\d%"):
        allocate(scores, model, 0.9, "uniform", r_max=0.5, cost_model=cm)
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="target must be"):
            allocate(scores, model, bad, cost_model=cm)


def test_rules_prune_insensitive_groups_harder():
    groups = ["a", "b"]
    scores, costs = {"a": 100.0, "b": 1.0}, {"a": 1000.0, "b": 1000.0}
    for rule in ["inverse", "per-param", "rank", "softmax"]:
        w = rule_weights(rule, groups, scores, costs)
        assert w["b"] > w["a"], rule
    w = rule_weights("param", groups, None, {"a": 100.0, "b": 10000.0})
    assert w["b"] > w["a"]
    assert rule_weights("inverse", groups, {"a": math.inf, "b": 0.0}, costs)["a"] == 0.0  # infinite score: never pruned by λ


def test_allocation_json_round_trip_and_bad_files(tmp_path, resnet18):
    model, cm, scores = resnet18
    alloc = allocate(scores, model, 0.5, "softmax", cost_model=cm)
    path = alloc.save(tmp_path / "a.json")
    assert Allocation.load(path) == alloc
    (tmp_path / "bad.json").write_text('{"ratios": {"conv1": 1.5}}')
    with pytest.raises(ValueError, match="must be in \\[0, 1\\)"):
        Allocation.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        Allocation.load(tmp_path / "broken.json")
