"""Allocation meets its parameter target as real torch-pruning counts it, respects bounds and locks, round-trips JSON."""
import copy
import json
import math
import random
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
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


class _Block(nn.Module):
    "ConvNeXt-like: depthwise, two pointwise convolutions and a layer-scale parameter (a bare nn.Parameter) on the residual."
    def __init__(self, c=16):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pw1 = nn.Conv2d(c, 3 * c, 1)
        self.pw2 = nn.Conv2d(3 * c, c, 1)
        self.gamma = nn.Parameter(torch.full((1, c, 1, 1), 0.1))  # (its channels: the last dimension longer than 1)
    def forward(self, x): return x + self.gamma * self.pw2(F.relu(self.pw1(self.dw(x))))


class OddNet(nn.Module):
    "What real networks hold and the zoo does not: layer scale (nested), a convolution called twice, a bare scalar parameter of the network itself, no recorded input shape."
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.block = _Block(16)
        self.mix = nn.Conv2d(16, 24, 1)
        self.twice = nn.Conv2d(24, 24, 3, padding=1)  # the same layer applied twice
        self.head = nn.Linear(24, 10)
        self.temperature = nn.Parameter(torch.ones(()))  # a scalar: no channel to prune
    def forward(self, x):
        x = self.block(F.relu(self.bn(self.stem(x))))
        x = self.twice(F.relu(self.twice(F.relu(self.mix(x)))))
        return self.head(x.mean((2, 3))) / self.temperature


@pytest.fixture(scope="module")
def odd():
    torch.manual_seed(0)
    model, x = OddNet().eval(), torch.rand(1, 3, 16, 16)
    return model, x, CostModel(model, example_inputs=x)


def test_cost_model_counts_layer_scale_a_twice_called_layer_and_a_scalar_parameter_as_torch_pruning_does(odd):
    from robust_prune.groups import count_cost
    from robust_prune.pruning import prune
    model, x, cm = odd
    assert cm.groups == ["block.pw1", "block.pw2", "twice"] and cm.layers["block.gamma"].kind == "param"
    assert cm.exact_dense is True and cm.dense == {k: float(v) for k, v in cm.counted.items()}
    for of, rule in (("params", "uniform"), ("macs", "param")):
        alloc = allocate(None, model, 0.5, rule, target_of=of, cost_model=cm, verify=False)
        pruned = copy.deepcopy(model)
        prune(pruned, alloc, "l2", example_inputs=x)
        assert cm.count(alloc.ratios) == {k: float(v) for k, v in count_cost(pruned, x).items()}, (of, alloc.ratios)
        assert abs(alloc.achieved - 0.5) <= 0.005 * 0.5


def test_cost_model_settings_reach_the_group_walk_and_bad_ones_are_refused(odd):
    from robust_prune.groups import ModelGroups
    model, x, cm = odd
    assert CostModel(model, example_inputs=x, groups=cm.mg).mg is cm.mg  # a walk given is reused
    assert "block.pw1" not in CostModel(model, example_inputs=x, ignored_layers=[model.block.pw1]).groups
    r8 = CostModel(model, example_inputs=x, round_to=8)
    assert r8.round_to == 8 and r8.kept({"block.pw2": 0.3})["block.pw2"] == 8  # 16 * 0.7 = 11.2, rounded to a multiple of 8
    assert CostModel(model, example_inputs=x, round_to=1).round_to == 1
    small = CostModel(OddNet(), example_inputs=torch.rand(1, 3, 8, 8))  # a fresh network: the input shape is the one given
    assert small.counted["params"] == cm.counted["params"] and small.counted["macs"] < cm.counted["macs"] / 3
    assert cm.max_ratio("block.pw2", 0.99) == 15 / 16  # one channel kept by default
    assert CostModel(model, example_inputs=x, min_channels=4).max_ratio("block.pw2", 0.99) == 12 / 16
    for kw, msg in ((dict(round_to=0), "round_to must be >= 1, got 0."), (dict(min_channels=0), "min_channels must be >= 1, got 0.")):
        with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"): CostModel(model, example_inputs=x, **kw)


def test_allocation_files_keep_infinite_scores_take_zero_ratios_and_refuse_bad_records():
    a = Allocation({"a": 0.0, "b": 0.5}, rule="inverse", scores={"a": math.inf, "b": 2.0})
    d = a.to_dict()
    assert d["scores"] == {"a": "inf", "b": 2.0} and json.dumps(d, allow_nan=False)  # strict JSON: no Infinity
    back = Allocation.from_dict(json.loads(json.dumps(d)))
    assert back == a and back.scores == {"a": math.inf, "b": 2.0} and type(back.ratios["a"]) is float
    assert Allocation({"a": 0.5}).to_dict()["scores"] is None
    assert Allocation.from_dict({"ratios": {"a": 0}, "scores": {"a": "2.5"}}).scores == {"a": 2.5}
    for bad in ({}, {"ratios": [0.5]}):
        with pytest.raises(ValueError, match=r"^An allocation needs a `ratios` mapping \{group: ratio\}\.$"): Allocation.from_dict(bad)
    with pytest.raises(ValueError, match=r"^Ratio of 'a' must be in \[0, 1\), got 1\.0\.$"): Allocation.from_dict({"ratios": {"a": 1.0}})
    with pytest.raises(ValueError, match=r"^Unknown allocation field\(s\): colour; known: ratios, rule, "):
        Allocation.from_dict({"ratios": {"a": 0.5}, "colour": "red"})


def test_rule_objects_allocate_as_their_names_do_and_a_rule_of_ones_own_is_recorded():
    from dataclasses import dataclass
    from robust_prune.allocation import PerParam, Rule, Softmax
    m = create_model("digits_resnet", seed=0)
    cm = CostModel(m)
    scores = {g: float(i % 4 + 1) for i, g in enumerate(cm.groups)}
    for name, obj, kw in [("per-param", PerParam(gamma=1.0), dict(gamma=1.0)), ("softmax", Softmax(temperature=2.0), dict(temperature=2.0))]:
        by_name = allocate(scores, m, 0.5, name, cost_model=cm, **kw)
        by_obj = allocate(scores, m, 0.5, obj, cost_model=cm)
        assert by_obj.ratios == by_name.ratios and (by_obj.rule, by_obj.gamma, by_obj.temperature) == (name, by_name.gamma, by_name.temperature)

    @dataclass
    class OnlyFirst(Rule):  # prune the first group alone
        name = "only-first"
        share: float = 1.0
        def weights(self, groups, scores, costs): return {g: self.share if i == 0 else 0.0 for i, g in enumerate(groups)}

    a = allocate(None, m, 0.02, OnlyFirst(), cost_model=cm, verify=False, tol=0.1)
    first = cm.groups[0]
    assert a.rule == "only-first" and a.meta["rule_settings"] == {"share": 1.0}
    assert a.ratios[first] > 0 and all(r == 0 for g, r in a.ratios.items() if g != first)
