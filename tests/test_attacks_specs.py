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
    assert ab.clean_acc > 0, "the test needs some correctly classified images"
    assert ab.adv_acc < ab.clean_acc and len(ab) == 16
    with torch.no_grad():  # the attack raised the loss it maximises, on (nearly) every image
        loss = lambda xs: torch.nn.functional.cross_entropy(model.eval()(xs), ab.y, reduction="none")
        assert (loss(ab.x_adv) > loss(ab.x)).float().mean() >= 0.9


def test_modes_are_restored_exactly_even_when_attack_raises(batch):
    x, y = batch
    model = create_model(seed=0).train()
    model.bn1.eval()
    perturb(model, x, y, "pgd:eps=0.1,steps=2")
    assert model.training and not model.bn1.training

    def fail_inside_the_attack(module, inputs):  # the attack's forward passes run on inputs that need gradients
        if inputs[0].requires_grad and not module.training: raise RuntimeError("failed inside the attack")
    handle = model.register_forward_pre_hook(fail_inside_the_attack)
    with pytest.raises(RuntimeError, match="failed inside the attack"):
        perturb(model, x, y, "pgd:eps=0.1,steps=2")
    handle.remove()
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


# ---------------------------------------------------------------- what build_attack hands to torchattacks
def test_build_attack_passes_every_option_and_default_to_the_torchattacks_object():
    model = create_model(seed=0)
    assert build_attack("fgsm:eps=0.1", model).eps == 0.1
    for name in ("pgd", "pgd-l2"):
        atk = build_attack(f"{name}:eps=0.4,steps=7,alpha=0.03,random_start=no", model)
        assert (atk.eps, atk.alpha, atk.steps, atk.random_start) == (0.4, 0.03, 7, False)
        atk = build_attack(f"{name}:eps=0.4", model)  # defaults: 10 steps of 2.5 * eps / steps, random start
        assert (atk.eps, atk.alpha, atk.steps) == (0.4, pytest.approx(0.1), 10) and atk.random_start is True
    atk = build_attack("tpgd:eps=0.1,steps=4", model)
    assert (atk.eps, atk.alpha, atk.steps) == (0.1, pytest.approx(0.0625), 4)
    atk = build_attack("apgd:eps=0.5,norm=L2,steps=4", model, seed=2)
    assert (atk.norm, atk.eps, atk.steps, atk.seed) == ("L2", 0.5, 4, 2)
    assert build_attack("apgd:eps=0.1", model).seed == 0, "the default seed"
    atk = build_attack("cw:c=0.5,kappa=0.2,steps=7,lr=0.05", model)
    assert (atk.c, atk.kappa, atk.steps, atk.lr) == (0.5, 0.2, 7, 0.05)
    atk = build_attack("square:eps=0.1,steps=50", model, seed=3)
    assert (atk.norm, atk.eps, atk.n_queries, atk.seed, atk.n_restarts, atk.p_init) == ("Linf", 0.1, 50, 3, 1, 0.8)
    assert atk.loss == "margin" and atk.rescale_schedule is False
    assert build_attack("square:eps=0.1", model).seed == 0
    with pytest.raises(ValueError, match="Attack 'none' has nothing to build"):
        build_attack("none", model)


def test_autoattack_parts_share_the_specs_norm_budget_seed_and_target_count():
    model = create_model(seed=0)
    parts = build_attack("autoattack:eps=0.5,norm=L2,steps=3", model, num_classes=5, seed=7).attacks
    ce, apgdt, fab, square = parts
    assert all((a.norm, a.eps, a.seed) == ("L2", 0.5, 7) for a in parts)
    assert ce.thr_decr == apgdt.thr_decr == 0.75
    assert apgdt.n_target_classes == fab.n_target_classes == 4, "targets: every other class when fewer than 9"
    two = build_attack("apgd-ce+apgd-t:eps=0.1", model, num_classes=2).attacks  # 2 classes is the least allowed
    assert two[1].n_target_classes == 1
    with pytest.raises(ValueError, match=r"^APGD-CE\+APGD-T-100 \(Linf, 0.1\) needs a model with at least 2 classes, got 1\.$"):
        build_attack("apgd-ce+apgd-t:eps=0.1", model, num_classes=1)


def test_budgets_are_printed_exactly_outside_the_pixel_fraction_range():
    assert format_pixels(256 / 255) == repr(256 / 255), "an L2 budget above 1 is no pixel fraction"
    assert format_pixels(1e-9 / 255) == repr(1e-9 / 255), "not a whole multiple of 1/255"


# ---------------------------------------------------------------- adversarial_batch and the data it reads
@pytest.fixture(scope="module")
def digits():
    xs, ys = zip(*get_loaders(batch_size=64).test)
    return torch.cat(xs), torch.cat(ys)


def test_adversarial_batch_defaults_attack_the_first_256_with_pgd_in_batches_of_128_seeded_by_offset(digits):
    x, y = digits[0][:300], digits[1][:300]
    model = create_model(seed=0)
    ab = adversarial_batch(model, (x, y))
    assert len(ab) == 256 and torch.equal(ab.x, x[:256]) and torch.equal(ab.y, y[:256])
    assert ab.spec.label == "PGD-10 (Linf, 8/255)"
    expected = torch.cat([perturb(model, x[:128], y[:128], "pgd", seed=0), perturb(model, x[128:256], y[128:256], "pgd", seed=128)])
    assert torch.equal(ab.x_adv, expected)
    with torch.no_grad():
        model.eval()
        assert ab.clean_acc == (model(x[:256]).argmax(1) == y[:256]).sum().item() / 256
        assert ab.adv_acc == (model(expected).argmax(1) == y[:256]).sum().item() / 256
    assert repr(ab) == (f"AdversarialBatch(n=256, attack=PGD-10 (Linf, 8/255), clean_acc={ab.clean_acc:.3f}, "
                        f"adv_acc={ab.adv_acc:.3f}, shape=(1, 8, 8))")


def test_adversarial_batch_uses_the_given_spec_seed_and_batch_size(batch):
    x, y = batch
    model = create_model(seed=0)
    spec = AttackSpec.parse("pgd:eps=0.1,steps=2")
    ab = adversarial_batch(model, (x, y), spec, n=12, batch_size=5, seed=5)
    assert ab.spec is spec and len(ab) == 12
    expected = torch.cat([perturb(model, x[i:min(i + 5, 12)], y[i:min(i + 5, 12)], spec, seed=5 + i) for i in (0, 5, 10)])
    assert torch.equal(ab.x_adv, expected)


def test_adversarial_batch_needs_at_least_one_sample(batch):
    model = create_model(seed=0)
    assert len(adversarial_batch(model, batch, "fgsm:eps=0.1", n=1)) == 1
    with pytest.raises(ValueError, match=r"^n must be at least 1, got 0\.$"):
        adversarial_batch(model, batch, "fgsm:eps=0.1", n=0)


def _batches_then_fail(x, y, size, good):
    "The first `good` batches of `size`, then an error: the reader must stop once it has what it needs."
    for i in range(good):
        yield x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]
    raise AssertionError("read a batch beyond the samples needed")


def test_adversarial_batch_reads_the_first_n_of_every_kind_of_data_and_no_more(batch):
    from torch.utils.data import DataLoader, TensorDataset
    x, y = batch
    model = create_model(seed=0)
    ds = TensorDataset(x, y)
    for data in (DataLoader(ds, batch_size=4), ds, [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])],
                 _batches_then_fail(x, y, 4, good=3)):
        ab = adversarial_batch(model, data, "none", n=9)
        assert torch.equal(ab.x, x[:9]) and torch.equal(ab.y, y[:9]) and torch.equal(ab.x_adv, x[:9])
    ab = adversarial_batch(model, _batches_then_fail(x, y, 4, good=2), "none", n=8)
    assert torch.equal(ab.x, x[:8])
    with pytest.raises(ValueError, match=r"^The data is empty\.$"):
        adversarial_batch(model, [], "none", n=4)
    with pytest.raises(ValueError, match=r"^Each label must be one class index, got one of shape \(2,\)\.$"):
        adversarial_batch(model, TensorDataset(x, torch.zeros(len(x), 2, dtype=torch.long)), "none", n=4)


# ---------------------------------------------------------------- perturb
def test_perturb_defaults_to_pgd_10_at_8_255(batch):
    x, y = batch
    model = create_model(seed=0)
    assert torch.equal(perturb(model, x, y, seed=0), perturb(model, x, y, "pgd:eps=8/255,steps=10", seed=0))


def test_perturb_checks_labels_and_shape_against_the_given_class_count_and_the_model(batch):
    x, y = batch
    model = create_model(seed=0)
    assert int(y.max()) >= 5, "the test needs a label beyond 4"
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, 4\]"):
        perturb(model, x, y, "fgsm:eps=0.1", num_classes=5)
    with pytest.raises(ValueError, match=r"takes images of shape \(C, H, W\) = \(1, 8, 8\)"):
        perturb(model, torch.rand(2, 1, 7, 7), y[:2], "fgsm:eps=0.1", num_classes=10)
    none = perturb(model, x, y, "none")
    assert torch.equal(none, x) and none is not x


def test_perturb_passes_num_classes_to_autoattack_for_a_model_that_cannot_tell(batch):
    x, y = batch
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 10, 8), torch.nn.Flatten())  # no Linear layer, no arch_config
    with pytest.raises(ValueError, match="Cannot tell the number of classes"):
        perturb(model, x, y, "apgd-ce+apgd-t:eps=0.1,steps=2")
    x_adv = perturb(model, x, y, "apgd-ce+apgd-t:eps=0.1,steps=2", num_classes=10)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 0.1 + 1e-6


def test_perturb_seed_repeats_results_and_leaves_the_global_rng_alone(batch):
    x, y = batch
    model = create_model(seed=0)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = perturb(model, x, y, "pgd:eps=0.1,steps=2", seed=0)
    assert torch.equal(torch.get_rng_state(), state), "a seeded attack must not move the caller's RNG"
    assert torch.equal(a, perturb(model, x, y, "pgd:eps=0.1,steps=2", seed=0))
    assert not torch.equal(a, perturb(model, x, y, "pgd:eps=0.1,steps=2", seed=1))
    torch.manual_seed(3)  # seed=None: the current RNG state, which the random start moves on
    b1 = perturb(model, x, y, "pgd:eps=0.1,steps=2")
    b2 = perturb(model, x, y, "pgd:eps=0.1,steps=2")
    torch.manual_seed(3)
    assert not torch.equal(b1, b2) and torch.equal(b1, perturb(model, x, y, "pgd:eps=0.1,steps=2"))


def test_perturb_seeds_apgd_with_its_seed(batch):
    x, y = batch
    model = create_model(seed=0)
    spec = "apgd:eps=0.1,steps=2"
    runs = [perturb(model, x, y, spec, seed=s) for s in (0, 1)]
    assert not torch.equal(runs[0], runs[1])
    for s, run in enumerate(runs):
        assert torch.equal(run, build_attack(spec, model, seed=s)(x, y).detach())


def test_cw_examples_beyond_the_l2_budget_fall_back_to_the_clean_image(batch):
    x, y = batch
    model = create_model(seed=0)
    free = perturb(model, x, y, "cw:eps=0,steps=10,c=10,lr=0.1")  # eps=0: unbounded
    norms = (free - x).flatten(1).norm(dim=1)
    moved = norms.nonzero().flatten().tolist()
    assert len(moved) >= 3, "the test needs at least three fooled images"
    order = sorted(moved, key=lambda i: norms[i].item())
    mid = order[len(order) // 2]
    for eps in (norms[mid].item(), norms[mid].item() - 1e-6):  # on the budget, and within its 1e-6 tolerance
        x_adv = perturb(model, x, y, AttackSpec("cw", eps=eps, steps=10, c=10, lr=0.1))
        assert x_adv.shape == x.shape
        for i in range(len(x)):
            kept = norms[i] <= norms[mid]
            assert torch.equal(x_adv[i], free[i] if kept else x[i]), (i, norms[i].item(), eps)


# ---------------------------------------------------------------- robust_accuracy
def test_robust_accuracy_equals_accuracies_counted_by_hand_with_per_batch_seeds(batch):
    x, y = batch
    model = create_model(seed=0)
    data = [(x, y), (x.flip(0), y.flip(0))]
    spec = "pgd:eps=0.1,steps=2"
    for seed in (0, 3):
        kw = {} if seed == 0 else dict(seed=seed)
        accs, n = robust_accuracy(model, data, [spec], **kw)
        clean = adv = 0
        for b, (xb, yb) in enumerate(data):
            x_adv = perturb(model, xb, yb, spec, seed=seed + b)
            with torch.no_grad():
                model.eval()
                clean += (model(xb).argmax(1) == yb).sum().item()
                adv += (model(x_adv).argmax(1) == yb).sum().item()
        assert n == 32
        assert accs == {"clean": pytest.approx(clean / 32), "PGD-2 (Linf, 0.1)": pytest.approx(adv / 32)}
    accs, n = robust_accuracy(model, data, ["none"], max_samples=20)  # the clean pass-through is not listed twice
    with torch.no_grad():
        clean20 = ((model(x).argmax(1) == y).sum() + (model(x.flip(0)[:4]).argmax(1) == y.flip(0)[:4]).sum()).item()
    assert n == 20 and accs == {"clean": pytest.approx(clean20 / 20)}


def test_robust_accuracy_stops_at_max_samples_without_reading_further(batch):
    x, y = batch
    accs, n = robust_accuracy(create_model(seed=0), _batches_then_fail(x, y, 8, good=2), ["fgsm:eps=0.1"], max_samples=16)
    assert n == 16 and set(accs) == {"clean", "FGSM (Linf, 0.1)"}


def test_robust_accuracy_counts_single_samples_and_refuses_no_samples(batch):
    x, y = batch
    model = create_model(seed=0)
    assert robust_accuracy(model, [(x[:1], y[:1])], [])[1] == 1
    assert robust_accuracy(model, [(x[:1], y[:1]), (x, y)], [])[1] == 17
    for kw in (dict(max_samples=0), {}):
        data = [(x, y)] if kw else [(x[:0], y[:0])]
        with pytest.raises(ValueError, match=r"^The data is empty: no sample was evaluated\.$"):
            robust_accuracy(model, data, ["fgsm:eps=0.1"], **kw)


def test_robust_accuracy_checks_every_batch_against_the_model(batch):
    x, y = batch
    model = create_model(seed=0)
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, 9\]"):
        robust_accuracy(model, [(x, torch.full_like(y, 10))], ["fgsm:eps=0.1"])
    with pytest.raises(ValueError, match=r"takes images of shape \(C, H, W\) = \(1, 8, 8\)"):
        robust_accuracy(model, [(torch.rand(2, 1, 7, 7), y[:2])], ["fgsm:eps=0.1"])
    with pytest.raises(ValueError, match="Two attacks share a label"):
        robust_accuracy(model, [(x, y)], ["pgd:eps=0.1", "pgd-linf:eps=0.1"])


def test_robust_accuracy_progress_bar_is_off_by_default_and_shows_label_and_total_when_on(batch, capsys):
    from torch.utils.data import DataLoader, TensorDataset
    x, y = batch
    model = create_model(seed=0)
    robust_accuracy(model, [(x, y)], ["fgsm:eps=0.1"])
    assert capsys.readouterr().err == ""
    runs = [(dict(data=[(x, y), (x, y)], max_samples=24), "evaluate", "0/24"),
            (dict(data=DataLoader(TensorDataset(x[:12], y[:12]), batch_size=5), desc="attacks"), "attacks", "0/12"),
            (dict(data=[(x, y)]), "evaluate", "0it")]
    for kw, desc, total in runs:
        kw = dict(kw)
        accs, n = robust_accuracy(model, kw.pop("data"), ["fgsm:eps=0.1"], progress=True, **kw)
        err = capsys.readouterr().err
        assert f"{desc}:" in err and total in err, err
        assert "\n" not in err and err.endswith("\r"), "the bar is removed when done"


# ---------------------------------------------------------------- AttackSpec validation boundaries and normalisation
@pytest.mark.parametrize("text,match", [
    ("deepfool", r"^Unknown attack 'deepfool'; choose one of: fgsm, pgd, pgd-l2, tpgd, apgd, cw, autoattack, apgd-ce\+apgd-t, square, none\.$"),
    ("pgd:eps=0", r"^pgd needs eps > 0 \(got 0\); use name='none' for clean accuracy\.$"),
    ("fgsm:eps=2", "larger than the whole"), ("tpgd:eps=2", "larger than the whole"), ("pgd:eps=1.5", "larger than the whole"),
    ("pgd:eps=2,norm=Linf", "larger than the whole"), ("pgd:eps=2,norm=linf", "larger than the whole"),
    ("pgd:norm=L2", r"^pgd is an Linf attack; use pgd-l2 for L2\.$"), ("tpgd:norm=L2", r"^tpgd is an Linf attack"),
    ("pgd-l2:eps=0.5,norm=Linf", r"^pgd-l2 is an L2 attack\.$"), ("cw:norm=Linf", r"^cw is an L2 attack\.$"),
    ("apgd:norm=L1", r"^norm must be 'Linf' or 'L2', got 'L1'\.$"),
    ("pgd:alpha=0", r"^alpha must be > 0, got 0\.0\.$"), ("pgd:alpha=inf", r"^alpha must be > 0, got inf\.$"),
    ("cw:c=0", r"^cw needs c > 0, lr > 0 and kappa >= 0\.$"), ("cw:lr=0", "cw needs"), ("cw:lr=-1", "cw needs"),
    ("cw:kappa=-1", "cw needs"),
])
def test_spec_limits_are_refused_with_their_message(text, match):
    with pytest.raises(ValueError, match=match):
        AttackSpec.parse(text)


@pytest.mark.parametrize("kw", [dict(steps=1.5), dict(steps=True)])
def test_steps_must_be_a_whole_number_not_a_bool(kw):
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        AttackSpec("pgd", **kw)


def test_spec_accepts_values_exactly_on_its_limits_and_normalises_what_it_keeps():
    assert AttackSpec.parse("pgd:steps=1").steps == 1 and AttackSpec.parse("pgd").steps == 10
    assert AttackSpec.parse("pgd:eps=1").eps == 1.0, "a budget of the whole pixel range is allowed"
    assert AttackSpec.parse("cw:eps=0").label == "CW-10 (L2, unbounded)"
    assert AttackSpec.parse("none:eps=0").label == "clean"
    assert AttackSpec.parse("cw:kappa=0,lr=0.001,c=0.001").kappa == 0
    spec = AttackSpec("pgd", eps="8/255", alpha="2/255")  # fractions given to the constructor are stored as floats
    assert spec.eps == 8 / 255 and spec.alpha == 2 / 255
    for given, norm in [("l2", "L2"), ("L2", "L2"), ("linf", "Linf"), ("LINF", "Linf"), ("inf", "Linf"), ("Linf", "Linf")]:
        assert AttackSpec("apgd", eps=0.5, norm=given).norm == norm, given


@pytest.mark.parametrize("norm", ["inf", "LINF", "linf", "Linf", None])
def test_an_linf_budget_beyond_the_pixel_range_is_refused_whatever_the_spelling_of_the_norm(norm):
    with pytest.raises(ValueError, match="larger than the whole"):
        AttackSpec("pgd", eps=8, norm=norm)


def test_a_budget_below_one_pixel_level_is_printed_exactly_not_as_zero_levels():
    assert format_pixels(1e-12 / 3) == repr(1e-12 / 3) and format_pixels(1 / 255) == "1/255"


def test_an_empty_batch_in_the_middle_of_the_data_does_not_end_the_count():
    x, y = next(iter(get_loaders(batch_size=16).test))
    model = create_model(seed=0)
    batches = [(x[:8], y[:8]), (x[:0], y[:0]), (x[8:], y[8:])]
    accs, n = robust_accuracy(model, batches, [])
    assert n == 16 and accs["clean"] == robust_accuracy(model, [(x, y)], [])[0]["clean"]


def test_batch_checks_name_what_was_expected_and_what_came():
    from robust_prune.attacks import check_batch
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([1, 2])
    cases = [((x, [1, 2]), TypeError, r"^x and y must be tensors\.$"), (([0.5], y), TypeError, r"^x and y must be tensors\.$"),
             ((x[0], y), ValueError, r"^Expected images of shape \[N, C, H, W\], got \(1, 8, 8\)\.$"),
             ((x[:0], y[:0]), ValueError, r"^The batch is empty\.$"),
             ((torch.rand(2, 3, 7, 6), y, None, (1, 8, 8)), ValueError,
              r"^The model takes images of shape \(C, H, W\) = \(1, 8, 8\) \(1 channel\(s\), 8x8 pixels\); got \(3, 7, 6\)\.$"),
             ((x, y[:1]), ValueError, r"^Expected 2 labels of shape \[N\], got \(1,\)\.$"),
             ((x * float("nan"), y), ValueError, r"^The images contain NaN or infinite values\.$"),
             ((torch.full_like(x, -0.5), y), ValueError, r"^Images must lie in \[0, 1\] \(models normalise internally\); got \[-0\.5, -0\.5\]\.$"),
             ((torch.full_like(x, 1.25), y), ValueError, r"^Images must lie in \[0, 1\] \(models normalise internally\); got \[1\.25, 1\.25\]\.$"),
             ((x, torch.tensor([1.0, 2.5])), ValueError, r"^Labels must be integer class indices, got torch\.float32 \(e\.g\. 1\)\.$"),
             ((x, torch.tensor([True, False])), ValueError, r"^Labels must be integer class indices, got torch\.bool\.$")]
    for args, kind, match in cases:
        with pytest.raises(kind, match=match):
            check_batch(*args)
    check_batch(x, y, 10, [1, 8, 8])  # a list is as good as a tuple


def test_parse_number_says_how_to_write_a_number():
    with pytest.raises(ValueError, match=r"^Cannot read 'eight' as a number \(write e\.g\. 0\.03 or 8/255\)\.$"):
        parse_number("eight")


def test_robust_accuracy_checks_every_batch_against_the_model_even_without_attacks():
    model = create_model(seed=0)
    x, y = next(iter(get_loaders(batch_size=16).test))
    with pytest.raises(ValueError, match="Labels must lie in"):
        robust_accuracy(model, [(x, y + 10)], [])
    with pytest.raises(ValueError, match="The model takes images of shape"):
        robust_accuracy(model, [(x[..., :7, :7], y)], [])


def test_robust_accuracy_seeds_its_attacks_with_zero_by_default():
    model = create_model(seed=0)
    loader = get_loaders(batch_size=16).test
    attacks = ["pgd:eps=0.03,steps=1"]  # one step from a random start: the seed shows in the accuracy
    zero, one = (robust_accuracy(model, loader, attacks, max_samples=64, seed=s)[0] for s in (0, 1))
    assert zero != one and robust_accuracy(model, loader, attacks, max_samples=64)[0] == zero


def test_the_number_of_classes_comes_from_the_recorded_settings_before_the_last_linear_layer():
    from robust_prune.attacks import num_classes_of
    head_less = torch.nn.Sequential(torch.nn.Conv2d(1, 7, 8), torch.nn.Flatten())
    with pytest.raises(ValueError, match=r"^Cannot tell the number of classes of this model; pass num_classes=\.$"):
        num_classes_of(head_less)
    head_less.arch_config = {"num_classes": 7}
    assert num_classes_of(head_less) == 7
    assert num_classes_of(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5), torch.nn.Linear(5, 3))) == 3


def test_a_torchattacks_attack_object_measures_what_the_spec_that_builds_it_measures(batch):
    import torchattacks
    x, y = batch
    model = create_model(seed=0)
    data = [(x, y), (x.flip(0), y.flip(0))]
    spec = AttackSpec("pgd", 0.1, steps=3)
    own = torchattacks.PGD(model, eps=0.1, alpha=spec.step_size, steps=3, random_start=True)
    accs, n = robust_accuracy(model, data, [spec, own], seed=5)
    assert n == 32 and list(accs) == ["clean", "PGD-3 (Linf, 0.1)", "PGD (torchattacks, eps=0.1)"]
    assert accs["PGD (torchattacks, eps=0.1)"] == accs["PGD-3 (Linf, 0.1)"] < accs["clean"]
    assert torch.equal(perturb(model, x, y, own, seed=1), perturb(model, x, y, spec, seed=1))
    with pytest.raises(ValueError, match="built on another model"):
        robust_accuracy(create_model(seed=1), data, [own])
