"""Foreign networks (torchvision, timm) through groups → allocation → real prune → save → reload in a fresh process."""
import copy
import random
import subprocess
import sys
import warnings

import pytest
import torch

from robust_prune.allocation import CostModel, allocate
from robust_prune.groups import ModelGroups, count_cost
from robust_prune.models import create_model, load_checkpoint, save_checkpoint
from robust_prune.pruning import prune

# a representative set: plain residual, grouped convolutions, depthwise + squeeze-excite, layer scale (bare parameters),
# inverted residuals with SiLU; every torchvision classifier and the timm families below run in the
# slow sweep
MODELS = ["torchvision:regnet_x_400mf", "timm:convnext_atto", "torchvision:mobilenet_v3_small"]
SIZE = 32

# inputs other than 32x32, each the smallest the architecture takes
SIZES = {
    "torchvision:alexnet": 63,  # three stride-2 3x3 max-pools after a stride-4 11x11 stem leave nothing below 63
    "torchvision:inception_v3": 75,  # its stem and reductions need 75 (torchvision's documented minimum)
    "torchvision:maxvit_t": 224,  # every stage's map must split into 7x7 windows: sides that are multiples of 7 * 32
    "torchvision:vit_h_14": 28,  # the side must be a multiple of the 14-pixel patch
}
# constructor arguments beyond num_classes
KWARGS = {
    "torchvision:vit_b_16": dict(image_size=32), "torchvision:vit_b_32": dict(image_size=32),
    "torchvision:vit_l_16": dict(image_size=32), "torchvision:vit_l_32": dict(image_size=32),
    "torchvision:vit_h_14": dict(image_size=28), "torchvision:maxvit_t": dict(input_size=(224, 224)),
    "timm:vit_tiny_patch16_224": dict(patch_size=8),  # 4 tokens of 8x8 at 32x32, plus the class token
}
# Measured on a shared 2-core CPU (one test per model, wall seconds): resnet18 52, squeezenet1_0 29, googlenet 95,
# inception_v3 176, timm resnet18d 85, mobilevit_xs 143, vit_tiny 168, shufflenet_v2_x1_0 (untraceable) 35; the widest
# (vit_h_14, regnet_y_128gf, vit_l_*, efficientnet_v2_l, convnext_large) were not run there (TESTING.md has them since).
# what torch-pruning cannot trace, and the word the one-line error names it by: ShuffleNet's channel shuffle; Swin, whose
# window reshapes multiply channel indices without end (torch-pruning's own benchmark skips Swin as "stuck"), or whose
# last patch merging at 32x32 defeats torch-pruning's concatenation mapping; MaxViT, whose partitions do the same
UNTRACEABLE = {**{f"torchvision:shufflenet_v2_{w}": "reshape" for w in ("x0_5", "x1_0", "x1_5", "x2_0")},
               **{f"torchvision:swin_{v}": "expand" for v in ("t", "v2_t", "v2_s", "v2_b")},
               **{f"torchvision:swin_{v}": "concatenation" for v in ("s", "b")},
               "torchvision:maxvit_t": "element-wise"}
CI_UNTRACEABLE = ("torchvision:shufflenet_v2_x0_5", "torchvision:swin_t")  # run every time; the others are slow

def _torchvision_all():
    import torchvision
    return [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)]

TIMM_FAMILIES = ["timm:resnet18", "timm:resnet18d", "timm:convnext_atto", "timm:efficientnet_b0", "timm:mobilenetv3_small_050",
                 "timm:mobilenetv3_large_100", "timm:regnetx_002", "timm:regnety_002", "timm:densenet121", "timm:mobilevit_xs",
                 "timm:vit_tiny_patch16_224"]
SLOW_MODELS = [s for s in _torchvision_all() + TIMM_FAMILIES if s not in MODELS and s not in UNTRACEABLE]
# where the cost model's dense count differs from torch-pruning's counter (allocate's verification on a pruned copy
# then makes the budget hold, and `achieved` is the counted value)
INEXACT: set[str] = set()
COMBOS = [(rule, of) for rule in ("uniform", "param", "random") for of in ("params", "macs")]
CI_COMBOS = [("uniform", "params"), ("param", "macs"), ("random", "macs")]  # each rule and each target once, every time

def _size(spec): return SIZES.get(spec, SIZE)

def _build(spec):
    return create_model(spec, "cifar10", size=_size(spec), seed=0, **KWARGS.get(spec, {})).eval()

def _random_scores(cm, seed=0):
    rng = random.Random(seed)
    return {g: 10 ** rng.uniform(-2, 2) for g in cm.groups}

def _sweep_one(spec, tmp_path, exact=True, combos=COMBOS):
    "Groups, then uniform, param and random allocations at params and MACs targets: each met after the real prune, as torch-pruning counts it."
    warnings.filterwarnings("ignore")
    model = _build(spec)
    cm = CostModel(model)
    assert cm.groups, spec
    if exact: assert cm.exact_dense, (spec, cm.dense, cm.counted)  # the cost model's dense count is the counter's
    s = _size(spec)
    x = torch.rand(2, 3, s, s)
    for rule, of in combos:
        rule_, scores = ("per-param", _random_scores(cm)) if rule == "random" else (rule, None)
        a = allocate(scores, model, 0.5, rule_, target_of=of, cost_model=cm)
        pruned = copy.deepcopy(model)
        prune(pruned, a, "l2")
        counted = count_cost(pruned, x)
        removed = (cm.counted[of] - counted[of]) / cm.dense_prunable(of)
        assert abs(removed - 0.5) <= 0.005 * 0.5, (spec, rule, of, removed)  # the budget, as torch-pruning counts it
        assert a.meta["verified"] and a.achieved == pytest.approx(removed, abs=1e-12)  # what the allocation reports is what pruning gives
        assert (a.meta["params_after"], a.meta["macs_after"]) == (counted["params"], counted["macs"])
        with torch.no_grad(): y = pruned(x)
        assert y.shape == (2, 10) and torch.isfinite(y).all()
        if (rule, of) == ("random", "macs"):
            path = tmp_path / f"{spec.replace(':', '_')}.pt"
            save_checkpoint(pruned, path)
            saved = (str(path), x, y)
        with torch.no_grad():  # and in training mode, as fine-tuning runs it (auxiliary heads included)
            assert pruned.train()(x).shape == (2, 10)
        del pruned
    return saved

@pytest.mark.parametrize("spec", MODELS)
def test_foreign_model_meets_param_and_mac_budgets_after_real_prune(spec, tmp_path):
    path, _, _ = _sweep_one(spec, tmp_path, combos=CI_COMBOS)
    torch.save(torch.rand(2, 3, 32, 32), tmp_path / "x.pt")
    x = torch.load(tmp_path / "x.pt")
    model, _ = load_checkpoint(path)
    expected = model.eval()(x)
    # a fresh process rebuilds the pruned network from plain data and gives identical outputs
    # the same thread count as this process: CPU kernels may sum in another order with another count
    code = ("import sys, torch; torch.set_num_threads(int(sys.argv[4])); from robust_prune.models import load_checkpoint; "
            "m, _ = load_checkpoint(sys.argv[1]); x = torch.load(sys.argv[2]); "
            "torch.save(m.eval()(x), sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, path, str(tmp_path / "x.pt"), str(tmp_path / "y.pt"), str(torch.get_num_threads())],
                   check=True)
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)
    with open(path, "rb") as f: assert b"torch_pruning" not in f.read()  # plain data, no pickled module

@pytest.mark.slow
@pytest.mark.parametrize("spec", SLOW_MODELS)
def test_every_torchvision_classifier_and_timm_family_meets_budgets_and_reloads(spec, tmp_path):
    path, x, y = _sweep_one(spec, tmp_path, exact=spec not in INEXACT)
    back, _ = load_checkpoint(path)  # rebuilt from plain data: the constructor, the pruning history, the weights
    with torch.no_grad(): assert torch.equal(back.eval()(x), y)

@pytest.mark.parametrize("spec", [pytest.param(s, marks=[] if s in CI_UNTRACEABLE else [pytest.mark.slow]) for s in UNTRACEABLE])
def test_models_torch_pruning_cannot_trace_fail_with_one_line(spec):
    model = _build(spec)
    for entry in (lambda: ModelGroups(model), lambda: CostModel(model), lambda: allocate(None, model, 0.5, "uniform"),
                  lambda: prune(model, 0.3)):
        with pytest.raises(ValueError) as e: entry()
        msg = str(e.value)
        assert "\n" not in msg and UNTRACEABLE[spec] in msg and "inputs of shape" not in msg, msg

def test_untraceable_model_fails_with_one_line_naming_the_operation():
    import torchvision
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
    with pytest.raises(ValueError) as e:
        ModelGroups(model, torch.zeros(1, 3, 32, 32))
    msg = str(e.value)
    assert "\n" not in msg and "reshape" in msg and "branch2" in msg and "inputs of shape" not in msg
    with pytest.raises(ValueError, match="reshape"):
        prune(model, 0.3)  # every entry point, prune included, says the same

def test_a_raw_torchvision_model_records_its_input_shape_and_saves_with_arch(tmp_path):
    import torchvision
    net = torchvision.models.resnet18(num_classes=7)
    prune(net, 0.3, example_inputs=torch.zeros(1, 3, 32, 32))  # the only call that needs the inputs
    allocate(None, net, 0.2, "uniform")  # reads the recorded shape
    with pytest.raises(ValueError, match="arch="):
        save_checkpoint(net, tmp_path / "a.pt")
    save_checkpoint(net, tmp_path / "a.pt", arch="torchvision:resnet18")
    back, _ = load_checkpoint(tmp_path / "a.pt")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(back.eval()(x), net.eval()(x))

def test_a_factory_named_in_a_file_is_not_imported_unless_allowed(tmp_path):
    model = create_model("torchvision.models:resnet18", "cifar10", size=32)
    save_checkpoint(model, tmp_path / "f.pt")
    with pytest.raises(ValueError, match="allow_import"):
        load_checkpoint(tmp_path / "f.pt")
    back, _ = load_checkpoint(tmp_path / "f.pt", allow_import=True)
    assert sum(p.numel() for p in back.parameters()) == sum(p.numel() for p in model.parameters())


def test_a_layer_the_forward_never_reaches_is_named_in_one_warning_and_attention_weights_are_not():
    import torch.nn as nn

    class WithAux(nn.Module):  # an auxiliary head the eval-mode forward never calls
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.aux, self.head = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 10), nn.Linear(8, 10)
        def forward(self, x): return self.head(self.bn(self.conv(x)).mean((2, 3)))

    with pytest.warns(UserWarning) as rec:
        ModelGroups(WithAux(), torch.zeros(1, 3, 8, 8))
    msgs = [str(w.message) for w in rec if "no gradient" in str(w.message)]
    assert len(msgs) == 1 and "\n" not in msgs[0] and msgs[0].startswith("2 parameter tensor(s) get no gradient") and "aux.weight, aux.bias." in msgs[0]
    import torchvision  # a ViT's attention uses out_proj's weight without calling the module: reached, so no warning
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ModelGroups(torchvision.models.VisionTransformer(32, 8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10),
                    torch.zeros(1, 3, 32, 32))
    assert not [w for w in rec if "no gradient" in str(w.message)]
