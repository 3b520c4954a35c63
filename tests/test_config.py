"""The settings layer: every configuration either validates or raises one ValueError that names the setting at fault
(a property test over random configurations); the first checks, and every argument error of the command line, are
answered without importing torch; the registries take their names from `config.NAMES`."""
import math
import subprocess
import sys
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from robust_prune.config import NAMES, RANGES, MRPFConfig, check_settings

FIELDS = [f.name for f in fields(MRPFConfig)]

_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
                 st.sampled_from(["", "0.5", "1e-3", "fast", "-1", "3"]), st.lists(st.integers(), max_size=2))
_ATTACKS = ["pgd:eps=0.1,steps=2", "fgsm:eps=8/255", "pgd:eps=", "foo", "autoattack:eps=0.1"]
_WHOLE = {"train_epochs": 0, "epochs": 0, "size": 4, "batch_size": 1, "train_samples": 1, "mrs_samples": 1, "prune_steps": 1, "round_to": 1,
          "checkpoint_steps": 1, "eval_samples": 1, "min_channels": 1}  # whole numbers and their least allowed value
_IN_RANGE = {  # an oracle written apart from RANGES: what a value must satisfy to be accepted
    **{k: (lambda lo: lambda v: isinstance(v, int) and v >= lo)(lo) for k, lo in _WHOLE.items()},
    **{k: lambda v: 0 <= v < 1 for k in ("sparsity", "r_min", "r_max")},
    **{k: lambda v: v > 0 for k in ("gamma", "temperature", "lr")}, "beta": lambda v: v >= 0,
}


def _values(k):
    "Values for the setting `k`: right and wrong ones of its own kind (edges of its range, names and misspellings), and junk."
    if k in _WHOLE: own = st.sampled_from([_WHOLE[k] - 1, _WHOLE[k], _WHOLE[k] + 1, 2.5, 3.0, "7", True])
    elif k in _IN_RANGE: own = st.sampled_from([-0.1, 0, 0.0, 0.5, 0.999, 1, 1.0, 1.5, float("nan"), "0.5", "1e-3", "fast", False])
    elif k in NAMES: own = st.sampled_from([*NAMES[k][0], *NAMES[k][1], "magic", "", NAMES[k][0][-1].upper().replace("-", "_")])
    elif k in ("mrs_attack", "train_attack"): own = st.sampled_from(_ATTACKS)
    elif k == "eval_attacks": own = st.lists(st.sampled_from([*_ATTACKS, 3]), max_size=3)
    elif k == "arch": own = st.sampled_from(["digits_resnet", "resnet18", "alexnet", "torchvision:resnet18", "timm:nothing_here", "a.b:c"])
    elif k in ("allow_import", "download", "progress"): own = st.booleans()
    else: own = st.sampled_from(["runs/x", "nowhere.pt", "cpu"])
    return st.one_of(own, own, _JUNK)


_CONFIGS = st.lists(st.sampled_from(FIELDS + ["weight", "Sparsity"]), unique=True, max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({k: _values(k) for k in keys}))


def test_the_range_oracle_covers_every_range():
    assert set(_IN_RANGE) == set(RANGES)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_CONFIGS)
def test_random_configurations_validate_or_raise_one_valueerror_naming_the_setting(d):
    try:
        config = MRPFConfig.from_dict(d)
    except ValueError as e:
        msg = str(e)
        assert "\n" not in msg and msg.endswith(".")
        bad = [k for k in d if k not in FIELDS]
        if bad: assert msg.startswith("Unknown config field(s): "), msg
        else: assert any(k in msg.lower() or k.replace("_", " ") in msg.lower() for k in d), (d, msg)
        return
    # accepted: every number of its field's type and inside its range, the bounds in order, every name a known one
    for k in d:
        got = getattr(config, k)
        if k in _IN_RANGE and got is not None:
            assert isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got) and _IN_RANGE[k](got), (k, got)
        if k in NAMES: assert str(got).lower().replace("_", "-") in (*NAMES[k][0], *NAMES[k][1]), (k, got)
    assert config.r_min <= config.r_max


def test_numbers_spelt_as_text_are_numbers_and_a_key_twice_in_yaml_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 1e-3\nepochs: 3\n")  # YAML 1.1 reads 1e-3 as a string
    config = MRPFConfig.load(tmp_path / "c.yaml")
    assert config.lr == 0.001 and config.epochs == 3
    (tmp_path / "twice.yaml").write_text("sparsity: 0.5\nsparsity: 0.9\n")
    with pytest.raises(ValueError, match=r"gives the key\(s\) 'sparsity' more than once"):
        MRPFConfig.load(tmp_path / "twice.yaml")


def test_the_registries_take_their_names_from_config():
    from robust_prune import allocation, data, finetune, mrs, pruning
    assert tuple(data.DATASETS) == NAMES["dataset"][0]
    assert tuple(mrs.ESTIMATORS) == NAMES["mrs_method"][0]
    assert allocation.RULES == NAMES["rule"][0] and pruning.CRITERIA == NAMES["criterion"][0]
    assert (finetune.METHODS, finetune.OPTIMIZERS, finetune.SCHEDULES) == (NAMES["method"][0], NAMES["optimizer"][0], NAMES["schedule"][0])


_WITHOUT_TORCH = """
import sys
from robust_prune.cli import main
rc = main(sys.argv[1:])
print(rc, "torch" in sys.modules)
"""


@pytest.mark.parametrize("args, said", [
    (["run", "--sparsity", "1.5"], "--sparsity must be a share in [0, 1)"),
    (["run", "--lr", "-1"], "--lr must be a number > 0"),
    (["run", "--r-max", "1.5"], "--r-max must be a number [0, 1)"),
    (["run", "--eval-samples", "-5"], "--eval-samples must be a whole number >= 1"),
    (["run", "--rule", "magic"], "Unknown allocation rule 'magic' (--rule)"),
    (["run", "--compare", "uniform,nope"], "Unknown allocation rule 'nope' (--compare)"),
    (["run", "--dataset", "mnist"], "Unknown dataset 'mnist' (--dataset)"),
    (["mrs", "--json", "."], "--json '.' is a folder"),
    (["train", "--out", "."], "--out '.' is a folder"),
    (["train", "--epochs", "0"], "--epochs must be at least 1 for train"),
    (["evaluate", "--max-samples", "0"], "--max-samples must be a whole number >= 1"),
    (["run", "--arch", "alexnet"], "Unknown architecture 'alexnet' (--arch); choose one of: resnet18,"),
    (["train", "--arch", "vgg19"], "Unknown architecture 'vgg19' (--arch)"),
    (["run", "--eval-attack", "foo"], "--eval-attack: Unknown attack 'foo'; choose one of: fgsm,"),
    (["run", "--mrs-attack", "pgd:steps=0"], "--mrs-attack: steps must be an integer >= 1, got 0."),
    (["train", "--attack", "pgd:eps=9"], "--attack: eps=9 is larger than the whole [0, 1] pixel range"),
    (["evaluate", "--attack", "deepfool"], "--attack: Unknown attack 'deepfool'"),
])
def test_argument_errors_are_answered_before_torch_is_imported(args, said, tmp_path):
    out = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.stdout.split() == ["2", "False"], out.stdout + out.stderr[-2000:]
    assert said in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_bad_setting_in_a_config_file_is_named_with_the_file(tmp_path):
    (tmp_path / "c.yaml").write_text("batch_size: big\n")
    out = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, "run", "--config", str(tmp_path / "c.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert f"batch_size (in '{tmp_path / 'c.yaml'}') must be a whole number >= 1, got 'big'." in out.stderr


def test_check_settings_alone_needs_no_torch():
    code = "import sys, robust_prune.config as c; c.check_settings({'lr': 0.1, 'rule': 'rank'}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    assert check_settings({"sparsity": 0}) == {"sparsity": 0.0}


def test_architecture_names_and_attack_specs_are_checked_without_torch_and_agree_with_the_registries():
    code = ("import sys; from robust_prune.config import arch_key, AttackSpec; "
            "print(arch_key('VGG16'), arch_key('Digits-ResNet'), arch_key('timm:convnext_atto'), AttackSpec.parse('aa:eps=8/255').label, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["vgg16_bn", "digits_resnet", "timm:convnext_atto", "AutoAttack", "(Linf,", "8/255)", "False"], out.stderr
    from robust_prune import attacks, models
    from robust_prune.config import ARCH_NAMES, REGISTERED_ARCHS, AttackSpec, arch_key
    assert tuple(models.ARCHITECTURES)[:len(ARCH_NAMES)] == ARCH_NAMES and attacks.AttackSpec is AttackSpec
    import torch
    models.register_architecture("my_net", lambda num_classes: torch.nn.Linear(4, num_classes))
    try:
        assert arch_key("my_net") == "my_net" and not models.imports_code("my_net")
    finally:
        models.ARCHITECTURES.pop("my_net"); REGISTERED_ARCHS.discard("my_net")
    with pytest.raises(ValueError, match="Unknown architecture 'my_net'"): arch_key("my_net")
