"""`robust-prune run` with no arguments: dense / uniform / MRPF at one budget, artefacts written, loadable elsewhere."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from robust_prune.pipeline import MRPFConfig

EXE = shutil.which("robust-prune")
pytestmark = pytest.mark.skipif(EXE is None, reason="the robust-prune console script is not installed (pip install -e .)")


def run(*args, cwd=None, timeout=900):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.mark.parametrize("args,reason", [
    (["run", "--sparsity", "1"], "sparsity must be a share in [0, 1)"),
    (["run", "--sparsity", "-0.1"], "sparsity must be a share in [0, 1)"),
    (["run", "--dataset", "imagenet"], "Unknown dataset 'imagenet'"),
    (["run", "--arch", "alexnet"], "Unknown architecture 'alexnet'"),
    (["run", "--checkpoint", "nowhere.pt"], "Checkpoint file not found"),
    (["run", "--out", "/proc/forbidden/run"], "Cannot write to output folder"),
    (["run", "--rule", "magic"], "Unknown allocation rule"),
    (["run", "--compare", "uniform,missing.json"], "Allocation file not found"),
    (["run", "--config", "nowhere.yaml"], "Config file not found"),
    (["mrs", "--mrs-method", "magic"], "Unknown MRS method"),
    (["run", "--r-max", "0.1"], "sparsity 0.7 is out of reach on this model: with every ratio in [r_min, r_max] = [0, 0.1]"),
    (["mrs", "--json", "/proc/forbidden/m.json"], "Cannot write"),
    (["run", "--dataset", "cifar10"], "--train-epochs N to train digits_resnet on cifar10 here first (only digits_resnet on digits "
                                      "ships with the package; training needs the cifar10 files in --data-root, or --download)"),
])
def test_run_and_mrs_bad_input_exit_2_with_one_line_reason(args, reason):
    out = run(*args)
    assert out.returncode == 2, out.stderr
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and reason in lines[0] and "Traceback" not in out.stderr


def test_config_file_is_read_and_command_line_options_win(tmp_path):
    (tmp_path / "c.yaml").write_text("sparsity: 0.5\nepochs: 2\nrule: inverse\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sparsity: 0.5\nsparsty: 0.6\n")
    from robust_prune.cli import build_parser, config_from_args
    args = build_parser().parse_args(["run", "--config", str(tmp_path / "c.yaml"), "--epochs", "4"])
    cfg = config_from_args(args)
    assert (cfg.sparsity, cfg.epochs, cfg.rule) == (0.5, 4, "inverse")
    with pytest.raises(ValueError, match="Unknown config field"):
        MRPFConfig.load(bad)


def test_run_with_default_settings_prints_dense_uniform_mrpf_table_and_writes_artefacts(tmp_path):
    # every setting at its default except how many test images are evaluated (150 of 450: the default evaluation,
    # PGD-20 and APGD-CE+APGD-T-100 on three networks, is most of the time of a default run)
    out = run(cwd=tmp_path, *["run", "--quiet", "--eval-samples", "150"])
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert {"dense", "uniform", "MRPF"} <= set(rows), out.stdout
    folder = tmp_path / "runs" / "mrpf"
    report = json.loads((folder / "report.json").read_text())
    dense, pruned = report["dense"], report["reports"]
    prov = report["provenance"]  # what produced it
    assert prov["seed"] == 0 and prov["device"] == "cpu" and prov["torch-pruning"] and prov["torchattacks"] == "3.3.0"
    assert set(pruned) == {"uniform", "MRPF (per-param)"}
    # the same parameter budget: 70% of the prunable parameters removed, within 0.5% of the prunable count
    pu, pm = pruned["uniform"]["params"], pruned["MRPF (per-param)"]["params"]
    assert pu < 0.5 * dense["params"] and abs(pu - pm) / dense["params"] < 0.01
    for r in pruned.values():
        assert r["clean_acc"] > 0.8 and min(r["robust_acc"].values()) > 0.3
    # dense and pruned models were timed again in turns: each latency has its spread
    assert all(r["latency_ms"] > 0 and r["latency_iqr_ms"] is not None for r in [dense, *pruned.values()])
    for name in ("config.json", "mrs_report.json", "mrs.html", "report.md", "accuracy.html",
                 "allocation_uniform.json", "pruned_uniform.pt", "history_uniform.json", "pruned_mrpf_per-param.pt"):
        assert (folder / name).is_file(), name
    # a pruned checkpoint loads and runs in a fresh process that never saw the pruning code path
    code = ("import sys, torch; from robust_prune.models import load_checkpoint; "
            "m, meta = load_checkpoint(sys.argv[1]); m.eval(); "
            "print(tuple(m(torch.rand(2, *m.arch_config['input_shape'])).shape), sum(p.numel() for p in m.parameters()))")
    res = subprocess.run([sys.executable, "-c", code, str(folder / "pruned_mrpf_per-param.pt")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    shape, n = res.stdout.split(")")[0] + ")", int(res.stdout.split(")")[1])
    assert shape == "(2, 10)" and n == pm
    from robust_prune.models import load_checkpoint
    _, meta = load_checkpoint(folder / "pruned_mrpf_per-param.pt")
    assert meta["provenance"]["torch"] == prov["torch"] and meta["provenance"]["device"] == "cpu"


def _result(target_of="params", macs=(507_616, 932_000), params=(52_325, 52_612)):
    from robust_prune.evaluation import RobustnessReport
    from robust_prune.pipeline import MRPFResult
    R = lambda name, p, m: RobustnessReport(name, 450, 0.97, {"PGD-20": 0.7}, p, m, 0.5)
    return MRPFResult(MRPFConfig(target_of=target_of), R("dense", 174_970, 1_666_442), None,
                      reports={"uniform": R("uniform", params[0], macs[0]), "MRPF (per-param)": R("MRPF (per-param)", params[1], macs[1])})


def test_table_says_when_the_compared_models_differ_by_more_than_5_percent_in_the_unmatched_cost():
    res = _result()
    note = res.cost_note()
    assert note.startswith("Note: the budget matched params, not MACs: 'MRPF (per-param)' keeps 1.84x the MACs of 'uniform'")
    assert "--target-of macs" in note and res.table().endswith(note) and "MACs / uniform" in res.table()
    assert _result(macs=(507_616, 532_000)).cost_note() == ""  # 4.8% apart: no note
    assert _result(macs=(507_616, 533_500)).cost_note() != ""  # 5.1% apart
    # matched on MACs, the parameters are the unmatched cost
    on_macs = _result("macs", macs=(500_000, 501_000), params=(52_000, 44_000)).cost_note()
    assert on_macs.startswith("Note: the budget matched macs, not parameters: 'uniform' keeps 1.18x the parameters") and "--target-of params" in on_macs
    assert "Note:" not in _result(macs=(500_000, 500_000)).table()


def test_with_both_matchings_each_matching_has_its_table_relative_to_its_own_uniform_row_and_its_note():
    from robust_prune.evaluation import RobustnessReport
    from robust_prune.pipeline import MRPFResult
    R = lambda name, p, m: RobustnessReport(name, 450, 0.97, {"PGD-20": 0.7}, p, m, 0.5)
    rows = [R("uniform @params", 52_000, 500_000), R("MRPF (per-param) @params", 52_100, 930_000),
            R("uniform @macs", 60_000, 400_000), R("MRPF (per-param) @macs", 61_000, 401_000)]
    res = MRPFResult(MRPFConfig(target_of="both"), R("dense", 174_970, 1_666_442), None, reports={r.name: r for r in rows})
    assert res.matched() == {"params": ["uniform @params", "MRPF (per-param) @params"], "macs": ["uniform @macs", "MRPF (per-param) @macs"]}
    params, macs = res.table().split("\n\nAt equal MACs:\n\n")
    assert params.startswith("At equal parameters:\n\n") and "uniform @macs" not in params and "uniform @params" not in macs
    # each table's relative columns divide by the uniform row of its own matching
    assert "MACs / uniform @params" in params and "MACs / uniform @macs" in macs
    assert "1.86x" in params.splitlines()[-3] and "1.00x" in macs.splitlines()[-1]  # 930k / 500k at equal params; 401k / 400k at equal MACs
    # a note under the table whose unmatched cost differs by more than 5%, none under the other
    assert params.endswith("'MRPF (per-param) @params' keeps 1.86x the MACs of 'uniform @params' (930.00 k against 500.00 k). "
                           "The rows at equal MACs are in the other table.") and "Note:" not in macs
    assert res.cost_note() == params.rsplit("\n\n", 1)[-1]
    assert "of prunable params, or of prunable MACs, removed" in repr(res)


def test_compare_with_both_matchings_prunes_every_allocation_to_each_budget_as_counted_after_pruning(tmp_path):
    from robust_prune.allocation import CostModel
    from robust_prune.finetune import robust_digits_model
    from robust_prune.groups import count_cost
    from robust_prune.models import load_checkpoint
    from robust_prune.pipeline import compare
    model = robust_digits_model()
    config = MRPFConfig(arch="resnet18", sparsity=0.5, target_of="both", epochs=0, eval_samples=16, eval_attacks=["fgsm:eps=0.1"], mrs_samples=8,
                        output_dir=str(tmp_path / "out"), progress=False)
    res = compare(config, ["uniform", "param"], model=model)
    assert list(res.reports) == ["uniform @params", "param @params", "uniform @macs", "param @macs"]
    x = torch.rand(1, *model.arch_config["input_shape"])
    cm = CostModel(model)
    for name, rep in res.reports.items():
        of = name.rsplit(" @", 1)[1]
        assert res.allocations[name].target_of == of
        pruned, _ = load_checkpoint(tmp_path / "out" / f"pruned_{name.replace(' @', '_')}.pt")
        counted = count_cost(pruned, x)
        assert (rep.params, rep.macs) == (counted["params"], counted["macs"])
        removed = (cm.counted[of] - counted[of]) / cm.dense_prunable(of)  # as torch-pruning counts it after the real prune
        assert removed == pytest.approx(0.5, abs=0.0025) and res.allocations[name].achieved == pytest.approx(removed, abs=1e-12)
    # the two matchings give different networks: uniform at equal MACs is not uniform at equal parameters
    assert res.reports["uniform @params"].macs != res.reports["uniform @macs"].macs
    assert "At equal parameters:" in res.table() and "At equal MACs:" in res.table()
    # the title names the dense model's architecture, not the config's arch (which builds nothing when a model is given)
    assert repr(res).startswith("MRPF on digits/digits_resnet, 50% of prunable params, or of prunable MACs, removed")


def test_a_compared_allocation_of_another_budget_or_other_groups_is_refused_before_anything_runs(tmp_path):
    import time
    from robust_prune.allocation import allocate
    from robust_prune.finetune import robust_digits_model
    from robust_prune.pipeline import compare
    model = robust_digits_model()
    small = allocate(None, model, 0.1, "uniform")
    small.save(tmp_path / "small.json")
    other = allocate(None, model, 0.7, "uniform")
    other.ratios["fc9"] = 0.5
    config = MRPFConfig(sparsity=0.7, output_dir=str(tmp_path / "out"), progress=False)
    t = time.time()
    with pytest.raises(ValueError, match=r"^Allocation 'small' removes 10\.\d% of the prunable params, not the 70\.0% every "
                                         r"compared allocation gets \(sparsity\); .* sparsity=0\.1\d\d\.$"):
        compare(config, ["uniform", str(tmp_path / "small.json")], model=model)
    with pytest.raises(ValueError, match=r"^Allocation 'uniform' names group\(s\) this model does not have: fc9; its groups: conv1, "):
        compare(config, ["uniform", other], model=model)
    assert time.time() - t < 30 and not (tmp_path / "out").exists()  # before the dense evaluation; no folder left


def test_a_budget_the_bounds_cannot_reach_is_refused_before_anything_runs_or_trains(tmp_path):
    from robust_prune.finetune import robust_digits_model
    from robust_prune.pipeline import compare
    config = MRPFConfig(sparsity=0.7, r_max=0.1, output_dir=str(tmp_path / "out"), progress=False)
    with pytest.raises(ValueError, match=r"^sparsity 0\.7 is out of reach on this model: with every ratio in \[r_min, r_max\] = "
                                         r"\[0, 0\.1\] an allocation removes 0\.0% to 1\d\.\d% of its prunable params; raise r_max"):
        compare(config, ["uniform", "mrs"], model=robust_digits_model())
    assert not (tmp_path / "out").exists()
    # a model to be trained first: checked on its architecture, before the (missing) CIFAR files are even looked for
    config = MRPFConfig(dataset="cifar10", arch="resnet18", train_epochs=1, sparsity=0.2, r_min=0.5, data_root=str(tmp_path),
                        output_dir=str(tmp_path / "out"), progress=False)
    with pytest.raises(ValueError, match=r"^sparsity 0\.2 is out of reach .* \[0\.5, 0\.8\] .*; lower r_min or raise sparsity\.$"):
        compare(config, ["uniform"])
    assert not (tmp_path / "out").exists()
