"""The widgets driven from code, without a front end: the editor keeps a valid allocation, the launcher runs and stops."""
import json
import math
import time
import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

from robust_prune.allocation import Allocation, CostModel, allocate
from robust_prune.attacks import AttackSpec, adversarial_batch
from robust_prune.data import get_loaders
from robust_prune.finetune import DIGITS_EPS, robust_digits_model
from robust_prune.models import read_checkpoint
from robust_prune.evaluation import format_count
from robust_prune.mrs import compute_mrs
from robust_prune.widgets import AllocationEditor, FineTuneLauncher, SensitivityExplorer

TOL = 0.005  # the allocation's relative tolerance on the target


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    "The demo network is tiny: one thread is fastest, and it keeps the launcher's thread from competing for cores."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def demo():
    model = robust_digits_model()
    dls = get_loaders("digits", batch_size=64, train_subset=256, test_subset=128, seed=0)
    batch = adversarial_batch(model, dls.test, AttackSpec("pgd", DIGITS_EPS, steps=5), n=128)
    report = compute_mrs(model, batch.x_adv, batch.y, method="rewind")
    return model, dls, report, CostModel(model)


def _editor(demo, target=0.5, rule="per-param", **kw):
    model, _, report, _ = demo
    return AllocationEditor(allocate(report, model, target=target, rule=rule), model, latency=False, **kw)


def _assert_valid(a: Allocation, cm: CostModel):
    for g, r in a.ratios.items():
        hi = cm.max_ratio(g, a.r_max)
        assert min(a.r_min, hi) - 1e-9 <= r <= hi + 1e-9, (g, r)
        assert math.isclose(r * cm.channels[g], round(r * cm.channels[g]), abs_tol=1e-9)  # whole channels


@settings(max_examples=15, deadline=None)
@given(target=st.floats(0.2, 0.93), locked=st.sets(st.integers(0, 8), max_size=4), lock_ratio=st.sampled_from([0.0, 0.25, 0.5]),
       rule=st.sampled_from(["per-param", "uniform", "inverse", "param"]))
def test_global_target_keeps_allocation_valid_locks_fixed_and_within_half_percent(demo, target, locked, lock_ratio, rule):
    model, _, report, cm = demo
    ed = _editor(demo)
    ed.use_rule(rule)
    names = [cm.groups[i] for i in sorted(locked)]
    for g in names:
        ed.sliders[g].value = lock_ratio
        ed.locks[g].value = True
    before = ed.allocation
    ed.target.value = target
    a = ed.allocation
    _assert_valid(a, cm)
    assert a.locked == sorted(names) and all(a[g] == before[g] for g in names)
    if "out of reach" in ed.status.value:  # refused: nothing changed
        assert a.ratios == before.ratios
    else:
        # the same solver as the API: identical to calling allocate with the locks
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            direct = allocate(report, model, target=ed.target.value, rule=rule, locked={g: before[g] for g in names})
        assert a.ratios == direct.ratios and a.rule == rule
        if caught:  # channel granularity: allocate could not get closer; the editor says so
            assert "channel granularity" in ed.status.value
        else:
            assert abs(cm.removed_fraction(a.ratios) - ed.target.value) <= TOL * ed.target.value


def test_lock_toggle_holds_ratio_through_rule_buttons_and_target_moves(demo):
    ed = _editor(demo)
    ed.sliders["layer3.0.shortcut.0"].value = 0.5
    ed.locks["layer3.0.shortcut.0"].value = True
    for act in (lambda: ed.buttons["uniform"].click(), lambda: setattr(ed.target, "value", 0.7),
                lambda: ed.buttons["MRS"].click(), lambda: setattr(ed.target, "value", 0.4)):
        act()
        assert ed.allocation["layer3.0.shortcut.0"] == 0.5 and ed.allocation.locked == ["layer3.0.shortcut.0"]
    ed.locks["layer3.0.shortcut.0"].value = False
    ed.target.value = 0.6
    assert ed.allocation["layer3.0.shortcut.0"] != 0.5 and ed.allocation.locked == []


def test_mrs_uniform_and_reset_buttons(demo):
    model, _, report, cm = demo
    ed = _editor(demo, target=0.6)
    start = ed.allocation
    ed.buttons["uniform"].click()
    assert ed.allocation.ratios == allocate(report, model, 0.6, "uniform").ratios and ed.allocation.rule == "uniform"
    ed.buttons["MRS"].click()
    assert ed.allocation.ratios == start.ratios and ed.allocation.rule == "per-param"
    ed.sliders["conv1"].value = 0.5
    ed.locks["conv1"].value = True
    ed.buttons["reset"].click()
    assert ed.allocation.ratios == start.ratios and ed.allocation.locked == [] and not ed.locks["conv1"].value


def test_mrs_button_disabled_without_scores(demo):
    model, *_ = demo
    ed = AllocationEditor(allocate(None, model, 0.5, "uniform"), model, latency=False)
    assert ed.buttons["MRS"].disabled and "per-param" not in ed.rule.options


def test_group_slider_sets_whole_channels_by_hand_and_updates_readout(demo):
    _, _, _, cm = demo
    ed = _editor(demo)
    text = ed.readout.value
    ed.sliders["layer3.1.conv1"].value = 0.3  # 64 channels: 0.3 keeps int(64 * 0.7) = 44
    a = ed.allocation
    assert a["layer3.1.conv1"] == 20 / 64 == ed.sliders["layer3.1.conv1"].value
    assert a.rule == "manual" and math.isclose(a.target, cm.removed_fraction(a.ratios)) and ed.target.value == a.target
    assert ed.readout.value != text and f"{int(cm.count(a.ratios)['params']):,}" in ed.readout.value
    assert ed.kept_labels["layer3.1.conv1"].value.startswith("44/64")


def test_hold_target_rebalances_the_other_groups(demo):
    _, _, _, cm = demo
    ed = _editor(demo, target=0.5)
    ed.hold.value = True
    ed.sliders["layer3.1.conv1"].value = 0.0
    a = ed.allocation
    assert a["layer3.1.conv1"] == 0.0 and abs(cm.removed_fraction(a.ratios) - 0.5) <= TOL * 0.5 and a.locked == []


def test_json_export_import_round_trip_and_bad_file_keeps_allocation(demo, tmp_path):
    ed = _editor(demo, target=0.7)
    ed.locks["conv1"].value = True
    ed.target.value = 0.5
    saved = ed.allocation
    ed.path.value = str(tmp_path / "a.json")
    ed.export_button.click()
    assert Allocation.load(tmp_path / "a.json").to_dict() == saved.to_dict()
    ed.buttons["reset"].click()
    assert ed.allocation.ratios != saved.ratios
    ed.import_button.click()
    assert ed.allocation.to_dict() == saved.to_dict() and ed.locks["conv1"].value
    (tmp_path / "bad.json").write_text(json.dumps({**saved.to_dict(), "ratios": {**saved.ratios, "conv1": 0.95}}))
    assert ed.load(tmp_path / "bad.json") is None and "outside the allocation's bounds" in ed.status.value
    assert ed.allocation.to_dict() == saved.to_dict()


def test_export_button_error_goes_to_status_and_foreign_rounding_is_refused(demo, tmp_path):
    model, _, report, _ = demo
    ed = _editor(demo)
    (tmp_path / "a_file").write_text("")
    ed.path.value = str(tmp_path / "a_file" / "alloc.json")  # a folder that cannot exist
    ed.export_button.click()
    assert "Error" in ed.status.value
    with pytest.raises(ValueError, match="round_to"): ed.set_allocation(allocate(report, model, 0.5, round_to=4))


def test_measure_prunes_a_copy_matching_the_prediction(demo):
    model, *_ = demo
    n0 = sum(p.numel() for p in model.parameters())
    ed = AllocationEditor(allocate(demo[2], model, 0.6), model, latency=True)
    assert "est." in ed.readout.value
    import robust_prune.widgets as w
    timed, real = [], w.measure_latencies
    w.measure_latencies = lambda models, *a, **k: (timed.append(list(models)), real(models, *a, **k))[1]
    try: m = ed.measure(repeats=3)
    finally: w.measure_latencies = real
    assert m["params"] == m["predicted_params"] and m["latency_ms"] > 0 and m["dense_latency_ms"] > 0
    assert timed == [["dense", "pruned"]]  # the pruned copy is timed in turns with the dense model, in one call
    assert f"dense {m['dense_latency_ms']:.3g} ms, timed in turns" in ed.measured.value
    assert sum(p.numel() for p in model.parameters()) == n0


def test_explorer_switches_and_compares_reports(demo):
    model, _, report, _ = demo
    ex = SensitivityExplorer({"rewind": report, "other": report}, compare=report)
    assert [t.name for t in ex.fig.data] == ["rewind", "compare: rewind"]
    ex.select.value, ex.compare.value = "other", "(none)"
    assert [t.name for t in ex.fig.data] == ["other"]
    ex.log.value = "linear"
    assert ex.fig.layout.yaxis.type == "linear"
    with pytest.raises(ValueError, match="MRSReport"): SensitivityExplorer({})


def test_launcher_runs_one_epoch_to_completion_from_code(demo, tmp_path):
    model, dls, report, _ = demo
    n0 = sum(p.numel() for p in model.parameters())
    ed = _editor(demo, target=0.5)
    la = FineTuneLauncher(model, dls, ed, epochs=1, attack=AttackSpec("pgd", DIGITS_EPS, steps=2), eval_samples=64,
                          checkpoint_dir=tmp_path)
    assert la.device.options[0] == "cpu" and ("cuda" in la.device.options) == torch.cuda.is_available()
    la.launch()
    with pytest.raises(RuntimeError, match="in progress"): la.launch()
    r = la.wait(timeout=300)
    assert len(r.history) == 1 and not r.stopped_early and r.checkpoint == tmp_path / "last.pt" and r.checkpoint.is_file()
    assert {"loss", "clean_acc", "robust_acc"} <= set(r.history.last)
    assert r.prune_report.params_after == int(ed.cm.count(ed.allocation.ratios)["params"])
    assert la.model is r.model and la.history is r.history and la.progress.value == la.progress.max == len(dls.train)
    assert [list(t.x) for t in la.fig.data] == [[1]] * 3 and not la.launch_button.disabled and la.stop_button.disabled
    # the robust curve and the read-outs name the attack behind the per-epoch number (a PGD monitor, not AutoAttack)
    assert la.fig.data[2].name == r.history.attack == "PGD-2 (Linf, 0.1)"
    assert f"PGD-2 (Linf, 0.1) {r.history.last['robust_acc']:.3f}" in la.status.value and "PGD-2 (Linf, 0.1)" in repr(r)
    assert sum(p.numel() for p in model.parameters()) == n0  # the source model is untouched


def test_launcher_stop_ends_early_and_keeps_last_checkpoint(demo, tmp_path):
    model, dls, report, _ = demo
    la = FineTuneLauncher(model, dls, allocate(report, model, 0.5), method="pgd-at", epochs=20,
                          attack=AttackSpec("pgd", DIGITS_EPS, steps=2), eval_samples=32, checkpoint_dir=tmp_path)
    la.launch()
    t0 = time.time()
    while la.running and (la.history is None or len(la.history) < 1):
        assert time.time() - t0 < 120
        time.sleep(0.05)
    la.stop_button.click()
    r = la.wait(timeout=120)
    assert r.stopped_early and 1 <= len(r.history) < 20 and la.progress.bar_style == "warning"
    saved = read_checkpoint(r.checkpoint)["meta"]["training"]["history"]["epochs"]
    assert len(saved) == len(r.history)


def test_launcher_error_is_shown_and_raised_by_wait(demo):
    model, dls, *_ = demo
    la = FineTuneLauncher(model, dls, {"no.such.layer": 0.5}, epochs=1)
    la.launch()
    with pytest.raises(ValueError, match="no.such.layer"): la.wait(timeout=60)
    assert "failed" in la.status.value and la.result is None and not la.launch_button.disabled


def test_every_number_the_widgets_show_is_the_api_answer(demo):
    model, _, report, cm = demo
    ed = _editor(demo)
    ed.target.value = 0.6
    ed.use_rule("inverse")
    api = allocate(report, model, 0.6, "inverse", cost_model=cm)
    a = ed.allocation
    assert a.ratios == api.ratios and a.achieved == api.achieved
    assert {g: s.value for g, s in ed.sliders.items()} == api.ratios  # the sliders
    assert list(ed.fig.data[0].y) == [api.ratios[g] for g in cm.groups]  # the bars
    kept = cm.kept(api.ratios)
    assert all(ed.kept_labels[g].value == f"{kept[g]}/{cm.channels[g]} ch" for g in cm.groups)  # the channel counts
    counts = cm.count(api.ratios)
    for shown in (f"{int(round(counts['params'])):,}", format_count(counts["macs"]), f"{cm.removed_fraction(api.ratios, 'params'):.1%}",
                  f"{cm.removed_fraction(api.ratios, 'macs'):.1%}"):
        assert shown in ed.readout.value, shown  # the read-out
    lo, hi = cm.bounds(api.r_min, api.r_max)
    assert all((s.min, s.max) == (lo[g], hi[g]) for g, s in ed.sliders.items())  # the slider ranges: the API's bounds
    ex = SensitivityExplorer({"rewind": report})
    bars, drawn = dict(zip(ex.fig.data[0].x, ex.fig.data[0].y)), report.plot().data[0]
    assert all(bars[g] == v for g, v in report.scores.items() if v > 0)  # the explorer's bars: the scores ...
    assert list(ex.fig.data[0].y) == list(drawn.y) and list(ex.fig.data[0].hovertext) == list(drawn.hovertext)  # ... as the report draws them


def test_static_images_add_a_png_beside_the_interactive_figure_and_allocation_score_ticks_are_short(monkeypatch):
    import base64
    import plotly.graph_objects as go
    import plotly.io as pio
    from robust_prune.widgets import use_static_images
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)  # restored after the test
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    assert "image/png" not in fig._repr_mimebundle_()
    assert use_static_images(width=300, scale=1.0) is True  # kaleido is a development dependency; Chromium comes with `make test`
    bundle = fig._repr_mimebundle_()
    assert "application/vnd.plotly.v1+json" in bundle  # JupyterLab still gets the interactive figure
    png = base64.b64decode(bundle["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 300  # width as asked
    alloc = Allocation({"a": 0.2, "b": 0.4}, rule="per-param", target=0.3, scores={"a": 1.1, "b": 1.104119})
    assert alloc.plot().layout.yaxis2.tickformat == ".3~g"
