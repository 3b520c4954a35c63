"""Evaluation counts what it says: parameters, MACs, latency, accuracy under each attack, tables, and the
gradient-masking checks (which pass on an honest model and fail on one whose gradients are masked)."""
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robust_prune.attacks import AttackSpec, accuracy, perturb, robust_accuracy
from robust_prune.data import get_dataset, get_loaders
from robust_prune.evaluation import (RobustnessReport, SanityReport, format_count, compare_reports, count_macs, count_params,
                                     default_attacks, evaluate, format_table, masking_checks, measure_latency, sanity_checks)
from robust_prune.models import create_model


def test_count_params_counts_every_parameter():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    assert count_params(model) == (4 * 9 + 4) + (144 * 10 + 10)
    assert count_params(create_model(seed=0)) == sum(p.numel() for p in create_model(seed=0).parameters())


def test_count_macs_counts_one_image_of_the_given_shape_and_restores_modes():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.Flatten(), nn.Linear(4 * 6 * 6, 10, bias=False)).train()
    # a 3x3 convolution to 4 maps of 6x6, then 144 -> 10
    assert count_macs(conv, (1, 8, 8)) == 4 * 6 * 6 * 9 + 144 * 10
    assert conv.training and conv[0].training
    model = create_model(seed=0)
    assert count_macs(model) == count_macs(model, (1, 8, 8)) > 0  # the recorded input shape is the default


class Sleepy(nn.Module):
    "Sleeps as long as its schedule says on each call (seconds), so the timing is known."
    def __init__(self, schedule):
        super().__init__()
        self.lin, self.schedule, self.calls, self.batches = nn.Linear(64, 10), list(schedule), 0, []

    def forward(self, x):
        time.sleep(self.schedule[self.calls]); self.calls += 1; self.batches.append(len(x))
        return self.lin(x.flatten(1))


def test_latency_is_the_median_of_the_timed_passes_in_milliseconds_after_warmup():
    model = Sleepy([0.4, 0.4] + [0.01, 0.02, 0.2]).train()  # two slow warm-up passes, then 10, 20 and 200 ms
    ms = measure_latency(model, (1, 8, 8), batch_size=3, repeats=3, warmup=2)
    assert 20 <= ms < 70, ms  # the median (20 ms), not the mean (77 ms) and not a warm-up pass (400 ms)
    assert model.calls == 5 and model.batches == [3] * 5 and model.training


@pytest.mark.parametrize("kw", [dict(repeats=0), dict(warmup=-1), dict(batch_size=0)])
def test_latency_refuses_impossible_settings(kw):
    with pytest.raises(ValueError, match="Need repeats >= 1"):
        measure_latency(create_model(seed=0), **kw)


def test_latency_refuses_a_device_the_model_is_not_on():
    with pytest.raises(ValueError, match="move it first"):
        measure_latency(create_model(seed=0), device="meta")


def test_human_numbers():
    assert [format_count(None), format_count(12), format_count(2500), format_count(1e6), format_count(1.5e9, "B"), format_count(-2000)] == \
        ["-", "12", "2.50 k", "1.00 M", "1.50 GB", "-2.00 k"]
    assert [format_count(999), format_count(1000), format_count(1e9), format_count(0.5, " ms")] == ["999", "1.00 k", "1.00 G", "0.5 ms"]


def two_reports():
    a = RobustnessReport("dense", 100, 0.9, {"PGD": 0.5}, params=1200, macs=3_000_000, latency_ms=1.234)
    b = RobustnessReport("pruned", 100, 0.875, {"PGD": 0.25, "AA": 0.125}, params=600)
    return a, b


def test_table_has_one_column_per_attack_and_a_dash_where_a_report_has_none():
    a, b = two_reports()
    assert format_table([a, b]).splitlines() == [
        "model   params    MACs  latency   clean     PGD      AA",
        "------  ------  ------  -------  ------  ------  ------",
        "dense   1.20 k  3.00 M  1.23 ms  90.00%  50.00%       -",
        "pruned     600       -        -  87.50%  25.00%  12.50%"]
    assert format_table([a, b], markdown=True).splitlines() == [
        "| model | params | MACs | latency | clean | PGD | AA |", "|---|---|---|---|---|---|---|",
        "| dense | 1.20 k | 3.00 M | 1.23 ms | 90.00% | 50.00% | - |",
        "| pruned | 600 | - | - | 87.50% | 25.00% | 12.50% |"]
    assert str(a) == format_table([a]) and a._repr_markdown_() == format_table([a], markdown=True)
    assert format_table([b]).splitlines()[1:] == ["------  ------  ----  -------  ------  ------  ------",
                                                  "pruned     600     -        -  87.50%  25.00%  12.50%"]  # headers set the width


def test_table_relative_to_a_report_shows_params_macs_and_latency_as_multiples_of_it():
    a, b = two_reports()
    base = RobustnessReport("uniform", 100, 0.8, {"PGD": 0.4}, params=400, macs=1_000_000, latency_ms=0.5)
    lines = format_table([a, base, b], relative_to=base).splitlines()
    assert lines[0].split() == ["model", "params", "MACs", "latency", "params", "/", "uniform", "MACs", "/", "uniform",
                                "latency", "/", "uniform", "clean", "PGD", "AA"]
    ratios = lambda line: [t for t in line.split() if t.endswith("x") or t == "-"][:3]
    assert ratios(lines[2]) == ["3.00x", "3.00x", "2.47x"] and ratios(lines[3]) == ["1.00x", "1.00x", "1.00x"]
    assert lines[4].split()[:8] == ["pruned", "600", "-", "-", "1.50x", "-", "-", "87.50%"]  # a missing cost is a dash, not a crash
    md = format_table([b], markdown=True, relative_to=base).splitlines()
    assert md[0] == "| model | params | MACs | latency | params / uniform | MACs / uniform | latency / uniform | clean | PGD | AA |"


def test_rows_and_frames_carry_every_number():
    a, b = two_reports()
    assert a.row() == dict(model="dense", params=1200, macs=3_000_000, latency_ms=1.234, n=100, clean=0.9, PGD=0.5)
    df = compare_reports([a, b])
    assert list(df.index) == ["dense", "pruned"] and df.loc["pruned", "AA"] == 0.125 and df.loc["dense", "clean"] == 0.9
    assert a.to_frame().loc["dense", "PGD"] == 0.5
    fig = b.plot()
    assert list(fig.data[0].x) == ["clean", "PGD", "AA"] and list(fig.data[0].y) == [0.875, 0.25, 0.125]
    assert list(fig.data[0].text) == ["87.5%", "25.0%", "12.5%"]
    assert fig.layout.title.text == "pruned: accuracy (100 samples)"
    assert tuple(fig.layout.yaxis.range) == (0, 1) and fig.layout.yaxis.tickformat == ".0%" and fig.layout.height == 320


def test_default_attacks_are_pgd20_and_the_autoattack_gradient_stages():
    assert default_attacks(0.1) == [AttackSpec("pgd", 0.1, steps=20), AttackSpec("apgd-ce+apgd-t", 0.1)]
    assert default_attacks(0.1, full=True)[1] == AttackSpec("autoattack", 0.1)


def test_evaluate_reports_the_accuracies_counts_and_attacks_it_ran():
    model = create_model(seed=0).eval()
    loader = get_loaders(batch_size=16).test
    rep = evaluate(model, loader, ["none", "fgsm:eps=0.1"], name="m", max_samples=40, latency=False, progress=False)
    x = torch.cat([b[0] for b in loader])[:40]
    y = torch.cat([b[1] for b in loader])[:40]
    assert rep.n_samples == 40 and rep.name == "m" and rep.latency_ms is None
    assert rep.clean_acc == pytest.approx(accuracy(model, x, y))
    assert rep.robust_acc["FGSM (Linf, 0.1)"] == pytest.approx(accuracy(model, perturb(model, x, y, "fgsm:eps=0.1"), y))
    assert set(rep.robust_acc) == {"FGSM (Linf, 0.1)"}
    assert rep.params == count_params(model) and rep.macs == count_macs(model) and rep.device == "cpu"
    assert rep.attacks == [AttackSpec.parse("fgsm:eps=0.1").to_dict()]
    bigger = evaluate(model, loader, [], max_samples=16, latency=False, progress=False, input_shape=(1, 16, 16))
    assert bigger.macs == count_macs(model, (1, 16, 16)) > rep.macs  # an input shape given is the one counted
    timed = evaluate(model, loader, [], max_samples=16, latency=True, latency_batch=2, progress=False)
    assert timed.latency_ms > 0 and timed.latency_batch == 2 and timed.robust_acc == {}


class Recorder(nn.Module):
    "A small convolutional network without an `arch_config`, recording the batch sizes it is called with."
    def __init__(self):
        super().__init__()
        self.net, self.batches = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 10)), []
    def forward(self, x): self.batches.append(len(x)); return self.net(x)


def test_evaluate_takes_the_input_shape_from_the_data_for_a_model_without_a_record(capsys):
    model = Recorder()
    rep = evaluate(model, get_loaders(batch_size=16).test, [], max_samples=16, latency_batch=3)
    assert rep.macs == count_macs(model, (1, 8, 8)) and rep.params == count_params(model)
    assert rep.latency_ms > 0 and rep.latency_batch == 3 and model.batches[-30:] == [3] * 30  # timed at the asked batch
    assert rep.name == "model" and "evaluate model" in capsys.readouterr().err  # the default name, on the progress bar


def test_evaluate_times_single_images_by_default_and_seeds_attacks_as_asked():
    model = create_model(seed=0).eval()
    loader = get_loaders(batch_size=16).test
    attacks = ["pgd:eps=0.03,steps=1"]  # one step from a random start: the seed shows in the accuracy
    rep = evaluate(model, loader, attacks, max_samples=64, progress=False)
    assert rep.latency_ms is not None and rep.latency_batch == 1
    by_seed = {s: robust_accuracy(model, loader, attacks, max_samples=64, seed=s)[0] for s in (0, 1, 3)}
    assert by_seed[0] != by_seed[1] and by_seed[0] != by_seed[3], "the seeds chosen do not change the accuracy"
    assert {"clean": rep.clean_acc, **rep.robust_acc} == by_seed[0]  # the default seed is 0
    assert {"clean": (r := evaluate(model, loader, attacks, max_samples=64, progress=False, latency=False, seed=3)).clean_acc,
            **r.robust_acc} == by_seed[3]


def test_sanity_report_passes_only_when_every_check_passes():
    rep = SanityReport(0.1, "Linf", 8, checks=[dict(check="a", passed=True, detail="x"), dict(check="bb", passed=False, detail="y")])
    assert not rep.passed and rep.failed == ["bb"]
    assert str(rep).splitlines() == ["gradient-masking checks (Linf, eps 0.1, 8 images):", "  ok      a   x", "  FAILED  bb  y",
                                     "  WARNING: 1 check(s) failed: robust accuracy may be overstated"]
    ok = SanityReport(0.1, "Linf", 8, checks=[dict(check="a", passed=True, detail="x")])
    assert ok.passed and ok.failed == [] and str(ok).splitlines()[-1] == "  all checks passed"
    assert str(SanityReport(8 / 255, "L2", 4)).splitlines() == ["gradient-masking checks (L2, eps 8/255, 4 images):", "  all checks passed"]


def verdicts(**kw):
    "masking_checks on exact binary fractions (no rounding at the boundaries): {check: passed}."
    args = dict(aa=("AA", 0.5), pgd={10: ("PGD-10", 0.5), 20: ("PGD-20", 0.5)}, square=("Square", 0.5),
                growth={0.25: 0.5, 0.5: 0.25, 1.0: 0.0}, slack=0.125, zero_acc=0.0)
    return {c["check"]: c["passed"] for c in masking_checks(**{**args, **kw})}


def test_masking_verdicts_allow_a_miss_of_exactly_the_slack_and_no_more():
    assert all(verdicts().values())
    pgd_aa, square = "PGD >= AutoAttack", "black-box Square >= white-box"
    assert verdicts(pgd={10: ("PGD-10", 0.375), 20: ("PGD-20", 0.375)})[pgd_aa]  # 0.5 - 0.125: on the boundary
    assert not verdicts(pgd={10: ("PGD-10", 0.25), 20: ("PGD-20", 0.25)})[pgd_aa]
    assert not verdicts(pgd={20: ("PGD-20", 0.5), 10: ("PGD-10", 0.25)})[pgd_aa]  # the fewest steps are compared, whatever the order
    assert verdicts(square=("Square", 0.375))[square] and not verdicts(square=("Square", 0.25))[square]
    assert verdicts(square=("Square", 0.75))[square]


def test_masking_verdicts_on_accuracy_as_the_budget_grows():
    grows = "accuracy -> 0 as eps grows"
    assert verdicts(growth={0.25: 0.5, 0.5: 0.625, 1.0: 0.0})[grows]  # a rise of exactly the slack is allowed
    assert not verdicts(growth={0.25: 0.5, 0.5: 0.75, 1.0: 0.0})[grows]  # the first step rises
    assert not verdicts(growth={0.25: 0.25, 0.5: 0.125, 1.0: 0.375})[grows]  # the last step rises (not above the first)
    assert not verdicts(growth={1.0: 0.0, 0.25: 0.0, 0.5: 0.25})[grows]  # budgets are taken in increasing order
    assert verdicts(growth={0.25: 0.5, 0.5: 0.25, 1.0: 0.0625}, zero_acc=0.0625)[grows]  # the largest budget at zero_acc passes
    assert not verdicts(growth={0.25: 0.5, 0.5: 0.0, 1.0: 0.125})[grows]  # the largest budget (not the one before) must be near 0


def test_masking_verdicts_on_more_pgd_steps():
    more = "more PGD steps never raise accuracy"
    assert verdicts(pgd={10: ("PGD-10", 0.5), 20: ("PGD-20", 0.625)})[more]
    assert not verdicts(pgd={10: ("PGD-10", 0.5), 20: ("PGD-20", 0.75)})[more]
    assert not verdicts(pgd={20: ("PGD-20", 0.75), 10: ("PGD-10", 0.5)})[more]  # steps in increasing order
    assert not verdicts(pgd={5: ("PGD-5", 0.25), 10: ("PGD-10", 0.25), 20: ("PGD-20", 0.5)})[more]  # the second step rises


def test_masking_verdicts_explain_themselves():
    checks = masking_checks(aa=("AA", 0.5), pgd={20: ("PGD-20", 0.75), 10: ("PGD-10", 0.625)}, square=("Square", 0.5625),
                            growth={1.0: 0.0, 0.25: 0.5}, slack=0.01, zero_acc=0.05)
    assert [(c["check"], c["detail"]) for c in checks] == [
        ("PGD >= AutoAttack", "PGD-10 62.50% vs AA 50.00%"),
        ("black-box Square >= white-box", "Square 56.25% vs AA 50.00%"),
        ("accuracy -> 0 as eps grows", "PGD-20 at eps 0.25: 50.00%, 1: 0.00%"),
        ("more PGD steps never raise accuracy", "PGD-10 62.50%, PGD-20 75.00%")]
    assert [c["passed"] for c in checks] == [True, True, True, False] and all(type(c["passed"]) is bool for c in checks)


@pytest.fixture(scope="module")
def linear():
    "A logistic regression on digits (about 95% accurate): an honest model whose gradients show the way."
    torch.manual_seed(0)
    ds = get_dataset("digits", train=True)
    x, y = torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor([int(ds[i][1]) for i in range(len(ds))])
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    test = get_dataset("digits", train=False)
    xt, yt = torch.stack([test[i][0] for i in range(48)]), torch.tensor([int(test[i][1]) for i in range(48)])
    return model.eval(), xt, yt


class Rounded(nn.Module):
    "The same model behind an input rounding: the same answers, zero gradients (masked)."
    def __init__(self, inner): super().__init__(); self.inner = inner
    def forward(self, x): return self.inner(torch.round(x * 4) / 4)


SMALL = dict(pgd_steps=(2, 5), square_queries=200, eps_growth=(2, 4))


def test_gradient_masking_checks_pass_on_an_honest_model(linear):
    model, x, y = linear
    rep = sanity_checks(model, x, y, "0.3", attack="apgd-ce+apgd-t:steps=5", tol=0.25, **SMALL)
    assert [c["check"] for c in rep.checks] == ["PGD >= AutoAttack", "black-box Square >= white-box",
                                                 "accuracy -> 0 as eps grows", "more PGD steps never raise accuracy"]
    assert rep.passed, str(rep)
    assert rep.eps == 0.3 and rep.n_samples == 48 and rep.slack == 0.25
    aa = AttackSpec.parse("apgd-ce+apgd-t:eps=0.3,steps=5").label
    # PGD at the steps asked, Square with the queries asked, PGD-20 at 0.6 and 1 (the whole pixel range; 0.3·4 lies beyond)
    assert set(rep.accuracies) == {aa, "PGD-2 (Linf, 0.3)", "PGD-5 (Linf, 0.3)", "Square-200 (Linf, 0.3)", "PGD-20 (Linf, 0.3)",
                                   "PGD-20 (Linf, 0.6)", "PGD-20 (Linf, 1)"}
    assert rep.checks[0]["detail"] == f"PGD-2 (Linf, 0.3) {100 * rep.accuracies['PGD-2 (Linf, 0.3)']:.2f}% vs {aa} {100 * rep.accuracies[aa]:.2f}%"


def test_gradient_masking_checks_flag_a_model_whose_gradients_are_masked(linear):
    model, x, y = linear
    rep = sanity_checks(Rounded(model), x, y, 0.1, attack="apgd-ce+apgd-t:steps=5", pgd_steps=(2, 5))
    assert not rep.passed and "black-box Square >= white-box" in rep.failed, str(rep)
    assert "Square-5000 (Linf, 0.1)" in rep.accuracies  # the default number of queries
    assert rep.slack == 1 / 48  # one image of 48 is more than the default tol of 0.5%


@pytest.mark.parametrize("kw,match", [(dict(attack="pgd"), "attack must be"), (dict(pgd_steps=()), "pgd_steps must be"),
                                      (dict(pgd_steps=(1.5,)), "pgd_steps must be"), (dict(pgd_steps=(0,)), "pgd_steps must be"),
                                      (dict(eps_growth=(1,)), "eps_growth"), (dict(zero_acc=1), r"^zero_acc and tol must lie in \[0, 1\)\.$"),
                                      (dict(tol=-0.1), "zero_acc and tol"), (dict(tol=1), "zero_acc and tol"), (dict(zero_acc=-0.1), "zero_acc and tol")])
def test_gradient_masking_checks_refuse_bad_settings(linear, kw, match):
    model, x, y = linear
    with pytest.raises(ValueError, match=match):
        sanity_checks(model, x, y, 0.1, **kw)


def test_gradient_masking_checks_in_l2_use_l2_attacks_up_to_the_image_diameter(linear):
    model, x, y = linear
    rep = sanity_checks(model, x, y, 0.5, norm="L2", attack="autoattack:steps=5", pgd_steps=(1, 5), square_queries=100,
                        eps_growth=(2,), tol=0.0, zero_acc=0.0)
    assert rep.norm == "L2" and rep.passed, str(rep)
    aa = AttackSpec.parse("autoattack:eps=0.5,norm=L2,steps=5").label
    # budgets 0.5, 1 and 8: the distance between an all-black and an all-white 8x8 image
    assert set(rep.accuracies) == {aa, "PGD-1 (L2, 0.5)", "PGD-5 (L2, 0.5)", "Square-100 (L2, 0.5)", "PGD-20 (L2, 0.5)",
                                   "PGD-20 (L2, 1)", "PGD-20 (L2, 8)"}
    # every attack was seeded with 0 (the default): the PGD-1 entry is what a seed-0 PGD-1 leaves correct
    assert rep.accuracies["PGD-1 (L2, 0.5)"] == accuracy(model, perturb(model, x, y, AttackSpec("pgd-l2", 0.5, steps=1), seed=0), y)


def test_gradient_masking_checks_run_on_a_single_image(linear):
    model, x, y = linear
    rep = sanity_checks(model, x[:1], y[:1], 0.5, norm="L2", attack="apgd-ce+apgd-t:steps=1", pgd_steps=(1,), square_queries=5)
    assert rep.n_samples == 1 and rep.slack == 1 and "PGD-20 (L2, 8)" in rep.accuracies


def test_measure_latencies_times_models_in_rotating_turns_and_restores_their_modes():
    from robust_prune.evaluation import measure_latencies
    nets = {k: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)) for k in "ABC"}
    calls = []
    for k, m in nets.items():
        m.register_forward_pre_hook(lambda mod, args, k=k: calls.append((k, mod.training)))
        m.train()
    lat = measure_latencies(nets, input_shape=(1, 8, 8), rounds=2, warmup=1)
    assert [k for k, _ in calls] == list("ABC" "BCA" "CAB")  # every round each model once, the order rotated
    assert not any(training for _, training in calls) and all(m.training for m in nets.values())  # eval while timed, restored after
    assert list(lat) == list("ABC") and all(med > 0 and iqr >= 0 for med, iqr in lat.values())
    with pytest.raises(ValueError, match="No model to time"): measure_latencies({})
    with pytest.raises(ValueError, match="rounds >= 1"): measure_latencies(nets, input_shape=(1, 8, 8), rounds=0)


def test_table_shows_the_latency_spread_when_it_was_measured():
    r = RobustnessReport("m", 10, 0.5, {}, params=10, macs=20, latency_ms=1.5, latency_iqr_ms=0.25)
    assert "1.50 ms (IQR 0.25)" in format_table([r]) and RobustnessReport.from_dict(r.to_dict()) == r
