"""The top-level API: `from robust_prune import ...` gives the modules' own objects, imported on first use."""
import importlib
import subprocess
import sys

import pytest

import robust_prune


def test_every_top_level_name_is_the_module_object():
    for name, module in robust_prune._API.items():
        if name == module: continue  # `finetune`: below
        assert getattr(robust_prune, name) is getattr(importlib.import_module(f"robust_prune.{module}"), name), name
    assert set(robust_prune._API) <= set(dir(robust_prune))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        robust_prune.nothing


def test_importing_the_package_does_not_import_torch():
    code = ("import sys, robust_prune; assert 'torch' not in sys.modules, 'torch imported'; "
            "from robust_prune import compute_mrs; assert 'torch' in sys.modules; "
            "import robust_prune.widgets, robust_prune.pipeline, robust_prune.cli; "
            "assert 'fastcore' not in sys.modules, 'fastcore imported at run time'; print(compute_mrs.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "robust_prune.mrs"


@pytest.mark.parametrize("first", ["", "import robust_prune.evaluation; "])
def test_top_level_finetune_trains_whether_or_not_its_module_was_imported_first(first):
    # `robust_prune.finetune` is both a submodule and the training function: either way the name can be called
    code = (first + "import torch; from robust_prune import finetune, create_model, get_loaders; "
            "dls = get_loaders('digits', batch_size=64, train_subset=64, seed=0); net = create_model('digits_resnet', dls.info, width=4); "
            "h = finetune(net, dls.train, method='clean', epochs=1, progress=False); print(len(h), h.method)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "clean"]


def _records():
    import math
    from robust_prune.allocation import Allocation
    from robust_prune.config import MRPFConfig
    from robust_prune.evaluation import RobustnessReport
    from robust_prune.finetune import History
    from robust_prune.mrs import GroupScore, MRSReport
    from robust_prune.pipeline import MRPFResult
    from robust_prune.pruning import PruneReport
    mrs = MRSReport("mrs", [GroupScore("conv1", ["conv1", "bn1"], 144, 16, {"conv1.weight": [16, 1, 3, 3]}, score=math.inf),
                            GroupScore("fc", ["fc"], 170, 10, score=2.5, alpha=0.3, sigma=0.01, samples=[2.0, 3.0])],
                    {"tau": 0.01}, 0.71, 1200, 3.5)
    hist = History("trades", "PGD-10 (Linf, 0.1)", [dict(epoch=1, loss=0.9, robust_acc=0.4)], [dict(epoch=1, batch=3)])
    dense = RobustnessReport("dense", 100, 0.9, {"PGD-10 (Linf, 0.1)": 0.5}, 1000, 5000)
    alloc = Allocation({"conv1": 0.5}, "per-param", 0.5, scores={"conv1": math.inf})
    prep = PruneReport("l2", 1000, 500, 5000, 2500, {"conv1": [16, 8]}, {"conv1": 0.5})
    result = MRPFResult(MRPFConfig(), dense, mrs, {"uniform": alloc}, {"uniform": prep}, {"uniform": hist}, {"uniform": dense})
    return [mrs, hist, dense, alloc, prep, result]


@pytest.mark.parametrize("i", range(6), ids=["MRSReport", "History", "RobustnessReport", "Allocation", "PruneReport", "MRPFResult"])
def test_every_result_is_a_record_that_saves_and_loads_itself_and_refuses_unknown_keys(tmp_path, i):
    import json
    from robust_prune.core import Record
    rec = _records()[i]
    cls = type(rec)
    assert isinstance(rec, Record)
    path = rec.save(tmp_path / "r.json")
    def refuse(c): raise AssertionError(f"{c} in the file: not strict JSON")
    assert json.loads(path.read_text(), parse_constant=refuse) == json.loads(json.dumps(rec.to_dict()))  # infinity as text
    again = cls.load(path)
    assert again.to_dict() == rec.to_dict()
    with pytest.raises(ValueError, match="Unknown .*field.*: bogus"):
        cls.from_dict({**rec.to_dict(), "bogus": 1})


def test_estimator_rule_and_loss_are_objects_as_given_or_built_from_a_name_and_their_own_settings():
    from robust_prune.allocation import PerParam, Softmax, allocation_rule
    from robust_prune.finetune import MART, TRADES, training_method
    from robust_prune.mrs import Criticality, Noise, Worst, estimator
    # each name builds its class from the settings that are its fields (estimators' noise_/worst_ prefixed), the rest ignored
    assert estimator("noise", noise_sigma=0.05, noise_draws=4, draws=9) == Noise(sigma=0.05, draws=4)
    assert estimator("Worst", worst_steps=5, draws=3, noise_sigma=1.0) == Worst(steps=5)
    assert estimator("mrs", draws=10, noise_draws=3) == Criticality(draws=10)
    assert allocation_rule("SOFTMAX", temperature=2.0, beta=1.0) == Softmax(temperature=2.0)
    assert training_method("mart", beta=3.0, temperature=2.0) == MART(beta=3.0)
    assert training_method("madry") == training_method("pgd-at")  # aliases
    mine = [Noise(sigma=0.2), PerParam(gamma=2.0), TRADES(beta=1.0)]
    assert [estimator(mine[0], noise_sigma=9.0), allocation_rule(mine[1], gamma=9.0), training_method(mine[2], beta=9.0)] == mine
    assert estimator(mine[0]) is mine[0]
    for bad, call in (("fisher", estimator), ("magic", allocation_rule), ("sgd", training_method)):
        with pytest.raises(ValueError, match=f"Unknown .*'{bad}'"): call(bad)
