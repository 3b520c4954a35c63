"""The demo's starting network: a digits ResNet trained with PGD is accurate and clearly robust, and the report says so."""
import torch

from robust_prune.attacks import AttackSpec
from robust_prune.data import get_loaders
from robust_prune.evaluation import evaluate
from robust_prune.finetune import DIGITS_EPS, robust_digits_model


def test_pgd_trained_digits_model_reaches_90_percent_clean_and_nonzero_pgd_accuracy():
    model = robust_digits_model(cache=False)  # trained here, from scratch (about 40 s on 2 cores)
    pgd = AttackSpec("pgd", DIGITS_EPS, steps=20)
    report = evaluate(model, get_loaders("digits", batch_size=150).test, [pgd], progress=False)
    assert report.n_samples == 450
    assert report.clean_acc >= 0.90
    assert report.robust_acc[pgd.label] >= 0.30  # clearly non-zero: a clean-trained model scores ~15% here
    assert report.params == sum(p.numel() for p in model.parameters()) and report.macs > 0 and report.latency_ms > 0
    assert "PGD-20 (Linf, 0.1)" in str(report) and "clean" in str(report)


def test_default_demo_network_is_the_shipped_one_and_nothing_is_trained(tmp_path, monkeypatch):
    import robust_prune.finetune as ft
    from robust_prune.models import read_checkpoint
    monkeypatch.setenv("ROBUST_PRUNE_CACHE", str(tmp_path))  # an empty cache: only the package's file can answer
    monkeypatch.setattr(ft, "finetune", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    model = robust_digits_model()
    shipped = ft.shipped_dir() / ft.demo_settings()[1]
    assert not list(tmp_path.iterdir())
    state = read_checkpoint(shipped)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and not model.training
    # the input-size tutorial's networks ship too (16x16, and a second 8x8 training), each its own weights
    others = [robust_digits_model(size=16), robust_digits_model(seed=1)]
    assert not list(tmp_path.iterdir())
    assert {p.name for p in ft.shipped_dir().glob("digits_resnet-*.pt")} == {ft.demo_settings(**s)[1] for s in ({}, {"size": 16}, {"seed": 1})}
    assert not torch.equal(others[1].state_dict()["conv1.weight"], model.state_dict()["conv1.weight"])
    # other settings are not shipped: they train (here refused by the patch) instead of loading the default network
    try:
        robust_digits_model(epochs=5)
        raise RuntimeError("unreachable")
    except AssertionError as e:
        assert str(e) == "trained"
