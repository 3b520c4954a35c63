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
    macs, params = tp.utils.count_ops_and_params(pruned, torch.zeros(1, 3, 32, 32))
    removed = (cm.total_params - params) / cm.dense_prunable("params")
    assert abs(removed - target) <= 0.005 * target
    assert {"params": params, "macs": macs} == cm.count(alloc.ratios)  # the prediction is exact, MACs too
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
    assert cm.exact_dense is True
    for of in ("params", "macs"):  # mobilevit_xs: attention blocks the counter counts by its own formula, layers inside them
        alloc = allocate(None, model, 0.5, "param", target_of=of, cost_model=cm)
        macs, params = tp.utils.count_ops_and_params(prune_copy(model, alloc), torch.zeros(1, 3, 32, 32))
        assert {"params": params, "macs": macs} == cm.count(alloc.ratios), of


def test_mac_target_is_met_on_resnet18(resnet18):
    model, cm, scores = resnet18
    alloc = allocate(scores, model, 0.6, "inverse", target_of="macs", cost_model=cm)
    macs, params = tp.utils.count_ops_and_params(prune_copy(model, alloc), torch.zeros(1, 3, 32, 32))
    removed = (cm.dense["macs"] - macs) / cm.dense_prunable("macs")
    assert abs(removed - 0.6) <= 0.005 * 0.6 and {"params": params, "macs": macs} == cm.count(alloc.ratios)
    assert alloc.meta["macs_after"] == macs and alloc.meta["params_after"] == params and alloc.achieved == removed


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
    assert {n: L.kind for n, L in cm.layers.items()} == {  # each layer once, each bare parameter by its own name
        "stem": "conv", "bn": "norm", "block.dw": "conv", "block.pw1": "conv", "block.pw2": "conv", "block.gamma": "param",
        "mix": "conv", "twice": "conv", "head": "linear", "temperature": "param"}
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


def test_rule_weights_are_exactly_their_formulas_with_floored_and_infinite_scores():
    "Each rule's unnormalised weights, computed by hand: a score <= 0 floored to a thousandth of the smallest positive one, an infinite one weight 0."
    g = ["a", "b", "c", "d", "e"]
    s = {"a": 1.0, "b": 4.0, "c": 0.0, "d": math.inf, "e": 16.0}
    p = {"a": 100.0, "b": 400.0, "c": -5.0, "d": 9.0, "e": 0.25}
    fl = 1e-3  # the floored score of "c": 1.0 * 1e-3
    close = lambda w, want: w.keys() == want.keys() and all(w[k] == pytest.approx(want[k], rel=1e-12, abs=0) for k in want)
    assert rule_weights("uniform", g) == {k: 1.0 for k in g}
    assert close(rule_weights("param", g, None, p), {"a": 10.0, "b": 20.0, "c": 0.0, "d": 3.0, "e": 0.5})
    assert close(rule_weights("param", g, None, p, gamma=2), {"a": 1e4, "b": 1.6e5, "c": 0.0, "d": 81.0, "e": 0.0625})
    assert close(rule_weights("inverse", g, s), {"a": 1.0, "b": 0.25, "c": 1 / fl, "d": 0.0, "e": 1 / 16})
    assert close(rule_weights("per-param", g, s, p), {"a": 10.0, "b": 10.0, "c": 0.0, "d": 0.0, "e": 0.125})
    assert close(rule_weights("per-param", {"a": 1}, {"a": 0.5}, {"a": 0.5}, gamma=3), {"a": 1.0})
    assert rule_weights("rank", g, s) == {"d": 0.2, "e": 0.4, "b": 0.6, "a": 0.8, "c": 1.0}  # most sensitive: 1/n
    logs = {"a": 0.0, "b": math.log(4), "c": math.log(fl), "e": math.log(16)}
    mu = sum(logs.values()) / 4
    sd = math.sqrt(sum((v - mu) ** 2 for v in logs.values()) / 4)
    for T in (1.0, 2.0):
        want = {k: math.exp(-(logs[k] - mu) / sd / T) if k in logs else 0.0 for k in g}
        assert close(rule_weights("softmax", g, s, temperature=T), want), T
        if T == 1.0: assert close(rule_weights("softmax", g, s), want)  # the default temperature
    assert rule_weights("softmax", ["a", "b"], {"a": 3.0, "b": 3.0}) == {"a": 1.0, "b": 1.0}  # no spread: all equal
    assert rule_weights("softmax", ["a"], {"a": 5.0}) == {"a": 1.0}
    assert rule_weights("inverse", ["a", "b"], {"a": -1.0, "b": 0.0}) == {"a": 1.0, "b": 1.0}  # no positive score: floor 1
    assert rule_weights("inverse", ["a", "b"], {"a": -math.inf, "b": 2.0}) == {"a": 1 / 2e-3, "b": 0.5}  # -inf is <= 0: floored


def test_rules_refuse_bad_settings_and_missing_inputs_with_one_line():
    from robust_prune.allocation import PerParam, allocation_rule
    g, s, p = ["a", "b"], {"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0}
    for rule, kw, msg in (("param", dict(gamma=0), "gamma must be > 0, got 0."), ("per-param", dict(gamma=-1.0), "gamma must be > 0, got -1.0."),
                          ("softmax", dict(temperature=0), "temperature must be > 0, got 0.")):
        with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"): rule_weights(rule, g, s, p, **kw)
    assert rule_weights("param", g, None, p, gamma=1e-9)["b"] == pytest.approx(1.0)  # any positive gamma is taken
    for rule, args, msg in (("param", (None, None), "Rule 'param' needs the groups' parameter costs."),
                            ("inverse", (None, p), "Rule 'inverse' needs sensitivity scores (an MRSReport)."),
                            ("rank", ({"b": 1.0}, p), "The scores have no entry for group(s): a, c."),
                            ("softmax", ({"a": 1.0, "b": math.nan}, p), "The scores contain NaN.")):
        with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"): rule_weights(rule, g + ["c"] if rule == "rank" else g, *args)
    assert allocation_rule() == PerParam(gamma=0.5) and allocation_rule("PER-PARAM") == PerParam()  # the default rule


class _GroupedNet(nn.Module):
    "A grouped convolution that is not depthwise (16 -> 32 channels in 4 groups) beside a depthwise one; norms without affine parameters, a head without bias."
    def __init__(self):
        super().__init__()
        self.stem, self.grouped = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.bn, self.dw = nn.BatchNorm2d(32, affine=False), nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pw, self.ln, self.head = nn.Conv2d(32, 24, 1), nn.LayerNorm(24, elementwise_affine=False), nn.Linear(24, 10, bias=False)
        self.square, self.gn = nn.Conv2d(32, 32, 1, groups=4), nn.GroupNorm(4, 32)  # grouped, as many channels in as out
        self.unused = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))  # never called: parameters, no MACs
    def forward(self, x):
        x = F.relu(self.bn(self.grouped(F.relu(self.stem(x)))))
        x = F.relu(self.pw(F.relu(self.gn(self.square(F.relu(self.dw(x)))))))
        return self.head(self.ln(x.mean((2, 3))))


def test_cost_model_counts_grouped_and_depthwise_convolutions_as_torch_pruning_does():
    from robust_prune.groups import count_cost
    from robust_prune.pruning import prune
    torch.manual_seed(0)
    model, x = _GroupedNet().eval(), torch.rand(1, 3, 8, 8)
    cm = CostModel(model, example_inputs=x)
    assert cm.exact_dense is True and cm.dense == {"params": 3424.0, "macs": 200456.0}  # grouped: 32 x 16/4 x 9 weights
    assert CostModel(model, example_inputs=torch.cat([x, x])).dense == cm.dense  # per image, whatever the batch
    for of, rule in (("params", "uniform"), ("macs", "param")):
        alloc = allocate(None, model, 0.5, rule, target_of=of, cost_model=cm, verify=False, tol=0.02)
        pruned = copy.deepcopy(model)
        prune(pruned, alloc, "l2", example_inputs=x)
        assert pruned.grouped.out_channels < 32 and pruned.dw.groups == pruned.dw.out_channels < 32
        assert cm.count(alloc.ratios) == {k: float(v) for k, v in count_cost(pruned, x).items()}, (of, alloc.ratios)


class _Biased:
    "A cost model whose real count removes `bias` less than it predicts (one group, the ratio is the predicted share)."
    def __init__(self, bias): self.bias, self.measured = bias, []
    def removed_fraction(self, ratios, of): return ratios["g"]
    def measure(self, ratios):
        self.measured.append(ratios["g"])
        return {"params_removed": ratios["g"] - self.bias, "macs_removed": ratios["g"] - 2 * self.bias, "params": 1, "macs": 2}


def test_verification_moves_the_aim_by_what_the_count_missed_and_keeps_the_closest_try():
    from robust_prune.allocation import _verify
    cm = _Biased(0.02)
    solve = lambda aim: {"g": aim}
    ratios, got, measured, predicted = _verify(cm, solve, {"g": 0.5}, 0.5, "params", 0.005)
    assert cm.measured == [0.5, 0.52] and ratios == {"g": 0.52} and got == pytest.approx(0.5) and predicted == 0.52
    assert measured == {"params_removed": got, "macs_removed": 0.52 - 0.04, "params": 1, "macs": 2}
    cm = _Biased(0.02)
    ratios, got, _, _ = _verify(cm, solve, {"g": 0.5}, 0.5, "macs", 0.005)  # the unit asked for is the one corrected
    assert cm.measured == [0.5, 0.54] and got == pytest.approx(0.5)
    cm = _Biased(0.001)  # within the tolerance: one count, nothing moved
    assert _verify(cm, solve, {"g": 0.5}, 0.5, "params", 0.005)[0] == {"g": 0.5} and cm.measured == [0.5]
    cm = _Biased(0.25)  # a miss of exactly the tolerance (relative to the target) is met
    assert _verify(cm, solve, {"g": 0.5}, 0.5, "params", 0.5)[0] == {"g": 0.5} and cm.measured == [0.5]
    cm = _Biased(0.004)  # over 0.5% of the target, though under 0.5 points: corrected
    assert _verify(cm, solve, {"g": 0.5}, 0.5, "params", 0.005)[0] == {"g": 0.504} and cm.measured == [0.5, 0.504]

    class Drifting(_Biased):  # the miss grows with every try: six tries, the first (closest) is kept
        def measure(self, ratios):
            self.measured.append(ratios["g"])
            return {"params_removed": ratios["g"] - 0.02 * len(self.measured) ** 2, "params": 1, "macs": 2}
    cm = Drifting(0)
    ratios, got, _, predicted = _verify(cm, solve, {"g": 0.5}, 0.5, "params", 0.005)
    assert len(cm.measured) == 6 and ratios == {"g": 0.5} and got == pytest.approx(0.48) and predicted == 0.5

    class Stuck(_Biased):  # every try counts the same: the first of equals is kept
        def measure(self, ratios):
            self.measured.append(ratios["g"])
            return {"params_removed": 0.45, "params": 1, "macs": 2}
    cm = Stuck(0)
    assert _verify(cm, solve, {"g": 0.5}, 0.5, "params", 0.005)[0] == {"g": 0.5} and len(cm.measured) == 6

    def refuse(aim):
        if aim > 0.51: raise ValueError("out of reach")
        return {"g": aim}
    cm = _Biased(0.02)  # a corrected aim out of reach: stop with the best so far
    assert _verify(cm, refuse, {"g": 0.5}, 0.5, "params", 0.005)[0] == {"g": 0.5} and cm.measured == [0.5]


def test_pruning_ratio_dict_maps_groups_to_the_modules_of_the_network_passed():
    m = create_model("digits_resnet", seed=0)
    cm8 = CostModel(m, round_to=8)
    g = cm8.groups[1]
    alloc = allocate(None, m, 0.4, "uniform", round_to=8, cost_model=cm8)
    d = pruning_ratio_dict(alloc, m)
    mods = dict(m.named_modules())
    assert d == cm8.mg.ratio_dict(alloc.ratios, m) == pruning_ratio_dict(alloc, m, groups=cm8.mg)
    assert set(d) == {mods[n] for n, r in alloc.ratios.items() if r > 0} and all(0 < v < 1 for v in d.values())
    other = copy.deepcopy(m)  # the modules of the network passed, not of the one the walk traced
    assert set(pruning_ratio_dict(alloc, other, groups=cm8.mg)) == {dict(other.named_modules())[n] for n in alloc.ratios if alloc.ratios[n] > 0}
    assert pruning_ratio_dict(Allocation({g: 0.3}), m) == {mods[g]: 0.28125}  # keeps 12 of 16 channels as torch-pruning rounds
    with pytest.raises(ValueError, match=r"^The allocation names layer\(s\) the model does not have: nope, gone\.$"):
        pruning_ratio_dict(Allocation({"nope": 0.5, g: 0.1, "gone": 0.2}), m)


def test_targets_at_the_edges_of_the_reach_are_met_and_one_beyond_is_refused():
    m = create_model("digits_resnet", seed=0)
    cm = CostModel(m)
    zero = allocate({g: 1.0 for g in cm.groups}, m, 0.0, "per-param", cost_model=cm, verify=False)
    assert set(zero.ratios.values()) == {0.0} and zero.achieved == 0.0
    lo_b, hi_b = cm.bounds(0.3, 0.6)
    lo, hi = cm.removed_fraction(lo_b), cm.removed_fraction(hi_b)
    for t in (lo, hi):  # exactly the least and the most the bounds allow
        a = allocate(None, m, t, "param", r_min=0.3, r_max=0.6, cost_model=cm, verify=False)
        assert a.achieved == pytest.approx(t, rel=0.005) and all(lo_b[g] <= r <= hi_b[g] for g, r in a.ratios.items())
    reach = re.escape(f"reachable range is {lo:.1%} to {hi:.1%}.")
    for t in (lo - 0.01, hi + 0.01):
        with pytest.raises(ValueError, match=f"^A target of {t:.1%} of params is out of reach with these bounds and locks: {reach}$"):
            allocate(None, m, t, "param", r_min=0.3, r_max=0.6, cost_model=cm, verify=False)
    every = {g: 0.25 for g in cm.groups}  # nothing left to re-balance: only what the locks remove can be asked for
    locked = allocate(None, m, cm.removed_fraction(every), "uniform", locked=every, cost_model=cm, verify=False)
    assert locked.ratios == every and locked.locked == sorted(cm.groups)
    with pytest.raises(ValueError, match="out of reach"): allocate(None, m, 0.5, "uniform", locked=every, cost_model=cm, verify=False)
    inf = allocate({g: math.inf for g in cm.groups}, m, 0.4, "inverse", cost_model=cm, verify=False)  # no weight anywhere
    assert inf.achieved == pytest.approx(0.4, rel=0.005) and inf.ratios == allocate(None, m, 0.4, "uniform", cost_model=cm, verify=False).ratios


@pytest.fixture(scope="module")
def spread():
    "The demo network with scores over four decades."
    m = create_model("digits_resnet", seed=0)
    cm = CostModel(m)
    return m, cm, {g: 10.0 ** ((i * 7) % 5 - 2) for i, g in enumerate(cm.groups)}


@pytest.mark.parametrize("of", ["params", "macs"])
def test_ratios_are_one_lambda_times_the_weights_clipped_to_within_a_channel_step(of, spread):
    "The documented shape, ratio_i = clip(λ·w_i, low_i, high_i): the single-channel polish after the λ search moves a group by at most a step or two."
    m, cm, scores = spread
    w = rule_weights("per-param", cm.groups, scores, cm.group_cost(of))
    lo_b, hi_b = cm.bounds(0.05, 0.9)
    a = allocate(scores, m, 0.5, "per-param", target_of=of, r_min=0.05, r_max=0.9, cost_model=cm, verify=False)
    step = {g: max(cm.channel_groups[g], 1) / cm.channels[g] for g in cm.groups}
    inner = [g for g in cm.groups if lo_b[g] + 2 * step[g] < a.ratios[g] < hi_b[g] - 2 * step[g]]
    assert len(inner) >= 3, a.ratios
    lam = sorted(a.ratios[g] / w[g] for g in inner)[len(inner) // 2]
    for g in cm.groups:
        want = min(max(lam * w[g], lo_b[g]), hi_b[g])
        assert abs(a.ratios[g] - want) <= 2 * step[g] + 1e-9, (g, a.ratios[g], want, step[g])


@pytest.mark.parametrize("of", ["params", "macs"])
def test_polish_ends_where_no_single_channel_move_within_the_bounds_comes_closer(of, spread):
    "With a tolerance no channel count can meet, the single-channel polish runs to a local optimum: closer than the λ search alone."
    m, cm, scores = spread
    lo_b, hi_b = cm.bounds(0.3, 0.6)
    locked = {cm.groups[0]: 0.5}
    kw = dict(target_of=of, r_min=0.3, r_max=0.6, locked=locked, cost_model=cm, verify=False)
    for target in (0.6, 0.64, 0.68, 0.72, 0.76):
        with pytest.warns(UserWarning, match="channel granularity"):
            a = allocate(scores, m, target, "per-param", tol=1e-12, **kw)
        loose = allocate(scores, m, target, "per-param", tol=0.05, **kw)
        miss = abs(cm.removed_fraction(a.ratios, of) - target)
        assert miss <= abs(cm.removed_fraction(loose.ratios, of) - target) and miss < 1e-3
        assert a.ratios[cm.groups[0]] == 0.5
        kept = cm.kept(a.ratios)
        for g in cm.groups[1:]:
            assert lo_b[g] - 1e-12 <= a.ratios[g] <= hi_b[g] + 1e-12, (target, g)
            for d in (1, -1):
                k = cm.next_kept(g, kept[g], d)
                if k is None or not lo_b[g] - 1e-12 <= (cm.channels[g] - k) / cm.channels[g] <= hi_b[g] + 1e-12: continue
                trial = {**a.ratios, g: (cm.channels[g] - k) / cm.channels[g]}
                assert abs(cm.removed_fraction(trial, of) - target) >= miss, (target, g, d)


def test_allocate_defaults_settings_and_one_line_errors(odd):
    from dataclasses import dataclass
    from robust_prune.allocation import Rule
    from robust_prune.mrs import GroupScore, MRSReport
    model, x, cm = odd
    scores = {"block.pw1": 2.0, "block.pw2": 0.5, "twice": 8.0}
    a = allocate(scores, model, example_inputs=x)  # the defaults: 50% of params, per-param, γ 0.5, verified
    assert (a.rule, a.target, a.target_of, a.gamma, a.temperature, a.min_channels, a.r_min, a.r_max) == ("per-param", 0.5, "params", 0.5, 1.0, 1, 0.0, 0.8)
    assert a.meta["verified"] is True and a.ratios == allocate(scores, model, 0.5, "per-param", gamma=0.5, cost_model=cm).ratios
    assert allocate(scores, model, 0.5, "softmax", cost_model=cm).temperature == 1.0
    assert allocate(scores, model, 0.5, "per-param", cost_model=cm).ratios != allocate(scores, model, 0.5, "per-param", gamma=1.5, cost_model=cm).ratios
    kw = dict(ignored_layers=["block.pw1"], round_to=2, min_channels=12, r_max=0.9)
    torch.manual_seed(0)
    fresh, x8 = OddNet().eval(), torch.rand(1, 3, 8, 8)  # no input shape recorded anywhere: only the one given
    own = allocate(None, fresh, 0.4, "uniform", example_inputs=x8, **kw)  # the cost model allocate builds gets every setting
    given = allocate(None, fresh, 0.4, "uniform", cost_model=CostModel(fresh, example_inputs=x8, ignored_layers=["block.pw1"], round_to=2, min_channels=12), **kw)
    assert own.ratios == given.ratios and own.meta == given.meta and set(own.ratios) == {"block.pw2", "twice"} and own.round_to == 2
    assert given.ratios["block.pw2"] == 0.25 and given.meta["macs_after"] < cm.counted["macs"] / 3  # 12 of 16 channels kept: min_channels binds
    report = MRSReport("mrs", [GroupScore(g, [g], 1, cm.channels[g], score=s) for g, s in scores.items()])
    by_report = allocate(report, model, 0.5, cost_model=cm, verify=False)
    assert by_report.ratios == allocate(scores, model, 0.5, cost_model=cm, verify=False).ratios and by_report.meta == {"score_method": "mrs"}
    counted = cm.measure(a.ratios)  # what the verification records: torch-pruning's count after a real prune
    assert a.meta == {"verified": True, "predicted": cm.removed_fraction(a.ratios), "params_after": counted["params"],
                      "macs_after": counted["macs"]} and a.achieved == counted["params_removed"]
    b = allocate(scores, model, 0.3, "inverse", target_of="macs", r_min=0.1, r_max=0.7, min_channels=2, verify=False,
                 gamma=2.0, temperature=3.0, cost_model=CostModel(model, example_inputs=x, min_channels=2))
    assert (b.target, b.target_of, b.r_min, b.r_max, b.min_channels, b.meta, b.scores) == (0.3, "macs", 0.1, 0.7, 2, {}, scores)
    assert (b.gamma, b.temperature) == (2.0, 3.0)  # a rule without them records the settings given
    for verify, how in ((True, "as torch-pruning counts it"), (False, "predicted")):
        with pytest.warns(UserWarning) as w:
            c = allocate(None, model, 0.3, "uniform", tol=1e-12, cost_model=cm, verify=verify)
        assert str(w[0].message) == (f"Allocation reaches {c.achieved:.4f} of params for a target of 0.3000 ({how}; channel granularity); "
                                     "tolerance was 0.0%.") and c.achieved != 0.3

    seen = []
    @dataclass
    class Costs(Rule):  # records the costs it is given
        name, needs_costs = "costs", True
        def weights(self, groups, scores, costs): seen.append(dict(costs)); return {g: 1.0 for g in groups}
    for of in ("params", "macs"):
        allocate(None, model, 0.3, Costs(), target_of=of, cost_model=cm, verify=False)
        assert seen[-1] == cm.group_cost(of) and cm.group_cost("params") != cm.group_cost("macs")
    fixed = cm.removed_fraction(cm.bounds(0.2, 0.2)[0])  # equal bounds: one ratio everywhere, one reachable target
    assert allocate(None, model, fixed, "uniform", r_min=0.2, r_max=0.2, cost_model=cm, verify=False).ratios == cm.bounds(0.2, 0.2)[0]
    for kw, msg in ((dict(target_of="flops"), "target_of must be 'params' or 'macs', got 'flops'."),
                    (dict(r_min=0.5, r_max=0.4), "Bounds need 0 <= r_min <= r_max < 1, got [0.5, 0.4]."),
                    (dict(r_max=1.0), "Bounds need 0 <= r_min <= r_max < 1, got [0.0, 1.0]."),
                    (dict(locked={"nope": 0.1}), "Locked group 'nope' is not a group of the model; groups: block.pw1, block.pw2, twice."),
                    (dict(locked={"twice": 1.0}), "Locked ratio of 'twice' must be in [0, 1), got 1.0.")):
        with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"): allocate(None, model, 0.3, "uniform", cost_model=cm, **kw)
    with pytest.raises(ValueError, match="^" + re.escape("The scores name group(s) the model does not have: a, b.") + "$"):
        allocate({**scores, "b": 1.0, "a": 1.0}, model, 0.3, cost_model=cm)


def test_allocation_iterates_its_groups_and_prints_its_header_and_table():
    a = Allocation({"a": 0.0, "b": 0.123456}, rule="inverse", target=0.3, achieved=0.25, scores={"a": math.inf, "b": 2.0}, locked=["b"])
    assert list(a) == ["a", "b"] and len(a) == 2 and a["b"] == 0.123456
    lines = repr(a).splitlines()
    assert lines[0] == "Allocation(rule=inverse, target=0.300 of params, achieved=0.2500, bounds=[0.0, 0.8])"
    assert lines[1].split() == ["ratio", "score", "locked"] and lines[2].split() == ["group"]
    assert lines[3].split() == ["a", "0", "inf", "False"] and lines[4].split() == ["b", "0.1235", "2", "True"]
    plain = repr(Allocation({"c": 0.5}, target_of="macs", r_min=0.1, r_max=0.7)).splitlines()
    assert plain[0] == "Allocation(rule=uniform, target=0.000 of macs, bounds=[0.1, 0.7])" and plain[3].split() == ["c", "0.5", "False"]
