"""AttackSpec validates its input; attacks keep their budget and leave the model's modes as they were."""
import pytest
import torch

from robust_prune.attacks import AttackSpec, build_attack, format_pixels, parse_number, perturb, adversarial_batch, robust_accuracy
from robust_prune.data import get_loaders
from robust_prune.models import create_model


@pytest.mark.parametrize("text,match", [("pgd:eps=-0.1", "eps must be"), ("deepfool", "Unknown attack"),
                                        ("pgd:steps=0", "steps must be"), ("pgd:eps=8", "larger than"),
                                        ("pgd:foo=1", "Unknown attack option"), ("fgsm:norm=L2", "Linf attack")])
def test_bad_attack_specs_raise_one_line_value_errors(text, match):
    with pytest.raises(ValueError, match=match) as err:
        AttackSpec.parse(text)
    assert "\n" not in str(err.value)


def test_spec_parses_pixel_fractions_and_round_trips():
    spec = AttackSpec.parse("pgd:eps=8/255,steps=20,alpha=2/255")
    assert spec.eps == pytest.approx(8 / 255) and spec.step_size == pytest.approx(2 / 255)
    assert spec.label == "PGD-20 (Linf, 8/255)"
    assert AttackSpec.from_dict(spec.to_dict()) == spec


@pytest.fixture(scope="module")
def batch():
    x, y = next(iter(get_loaders(batch_size=16).test))
    return x, y


@pytest.mark.parametrize("text", ["fgsm:eps=0.1", "pgd:eps=0.1,steps=3", "pgd-l2:eps=0.5,steps=3",
                                  "tpgd:eps=0.1,steps=2", "cw:eps=0.5,steps=5", "apgd:eps=0.1,steps=3",
                                  "autoattack:eps=0.1,steps=5", "autoattack:eps=0.5,norm=L2,steps=5",
                                  "apgd-ce+apgd-t:eps=0.1,steps=5", "square:eps=0.1,steps=50", "square:eps=0.5,norm=L2,steps=50"])
def test_each_attack_stays_within_budget_and_pixel_range(batch, text):
    x, y = batch
    model = create_model(seed=0)
    spec = AttackSpec.parse(text)
    x_adv = perturb(model, x, y, spec, seed=0)
    d = (x_adv - x).flatten(1)
    size = d.abs().max(1).values if spec.norm == "Linf" else d.norm(dim=1)
    assert size.max() <= spec.eps + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_lowers_accuracy_of_an_untrained_model_below_clean(batch):
    x, y = batch
    model = create_model(seed=0)
    ab = adversarial_batch(model, (x, y), "pgd:eps=0.3,steps=10", n=16)
    assert ab.adv_acc <= ab.clean_acc and len(ab) == 16


def test_modes_are_restored_exactly_even_when_attack_raises(batch):
    x, y = batch
    model = create_model(seed=0).train()
    model.bn1.eval()
    perturb(model, x, y, "pgd:eps=0.1,steps=2")
    assert model.training and not model.bn1.training
    with pytest.raises(ValueError, match="Labels must lie"):
        perturb(model, x, y + 10, "pgd:eps=0.1,steps=2")
    assert model.training and not model.bn1.training


def test_robust_accuracy_counts_each_attack_separately(batch):
    model = create_model(seed=0)
    accs, n = robust_accuracy(model, [batch, batch], ["fgsm:eps=0.1", "pgd:eps=0.1,steps=2"], max_samples=24)
    assert n == 24 and set(accs) == {"clean", "FGSM (Linf, 0.1)", "PGD-2 (Linf, 0.1)"}
    assert all(0 <= v <= 1 for v in accs.values())


def test_autoattack_is_built_with_the_reference_settings_and_honours_steps():
    model = create_model(seed=0)
    ce, apgdt, fab, square = build_attack("autoattack:eps=8/255", model).attacks
    assert [ce.steps, apgdt.steps, fab.steps] == [100, 100, 100] and ce.loss == "ce"
    assert [ce.n_restarts, apgdt.n_restarts, fab.n_restarts, square.n_restarts] == [1, 1, 1, 1]
    assert apgdt.n_target_classes == 9 and fab.n_target_classes == 9 and fab.multi_targeted
    assert square.n_queries == 5000 and square.p_init == 0.8 and square.rescale_schedule is False
    assert [a.steps for a in build_attack("autoattack:eps=8/255,steps=7", model).attacks[:3]] == [7, 7, 7]
    assert [type(a).__name__ for a in build_attack("apgd-ce+apgd-t:eps=0.1", model).attacks] == ["APGD", "APGDT"]


def test_only_the_standard_autoattack_is_labelled_autoattack():
    assert AttackSpec.parse("aa:eps=8/255").label == "AutoAttack (Linf, 8/255)"
    assert AttackSpec.parse("autoattack:eps=0.5,norm=L2").label == "AutoAttack (L2, 0.5)"
    assert AttackSpec.parse("autoattack:eps=8/255,steps=10").label == "non-standard AutoAttack-10 (Linf, 8/255)"
    assert AttackSpec.parse("apgd-ce+apgd-t:eps=0.2").label == "APGD-CE+APGD-T-100 (Linf, 0.2)"
    assert AttackSpec.parse("square:eps=0.2").label == "Square-5000 (Linf, 0.2)"


@pytest.mark.parametrize("eps,text", [(8 / 255, "8/255"), (0.1, "0.1"), (0.2, "0.2"), (2 / 255, "2/255"), (0.5, "0.5"), (1 / 7, "0.14285714285714285")])
def test_budgets_are_printed_exactly(eps, text):
    assert format_pixels(eps) == text and parse_number(text) == eps
