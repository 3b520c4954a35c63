"""The GPU path of fine-tuning (autocast in the step and in the inner attack, gradient scaler, channels-last) run on
the CPU, the GPU check's dry mode, and the CUDA-marked tests that `benchmarks/gpu_check.sh` runs on a GPU."""
import copy
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import ROOT
from robust_prune.finetune import finetune, linf_pgd, training_loss
from robust_prune.attacks import AttackSpec
from robust_prune.data import dataset_info
from robust_prune.models import create_model


def _data(n=32, batch=16, size=8, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    ds = TensorDataset(torch.rand(n, channels, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))
    return DataLoader(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed))


class _Dtypes:
    "Records the dtype of the first convolution's output, separately for train-mode and eval-mode (attack) forwards."
    def __init__(self, model):
        self.seen = {True: set(), False: set()}
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda mod, i, o: self.seen[mod.training].add(o.dtype))


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_amp_runs_training_step_and_inner_attack_in_low_precision_on_cpu(amp, dtype):
    model = create_model("digits_resnet", seed=0, width=4)
    before = copy.deepcopy(model.state_dict())
    rec = _Dtypes(model)
    hist = finetune(model, _data(), method="trades", attack="pgd:eps=0.1,steps=2", epochs=1, progress=False, amp=amp)
    assert rec.seen[True] == {dtype}, "training forwards"
    assert rec.seen[False] == {dtype}, "the inner attack's forwards"
    assert torch.isfinite(torch.tensor(hist.last["loss"]))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), "the weights did not change"


def test_default_amp_on_cpu_is_full_precision():
    model = create_model("digits_resnet", seed=0, width=4)
    rec = _Dtypes(model)
    finetune(model, _data(), method="pgd-at", attack="pgd:eps=0.1,steps=1", epochs=1, progress=False)
    assert rec.seen[True] == rec.seen[False] == {torch.float32}


def test_fp16_inner_attack_moves_as_far_as_in_fp32():
    "TRADES' first KL gradients underflow in fp16 unless the attack's loss is scaled: the attack would not move."
    model = create_model("resnet18", dataset_info("cifar10", size=16), seed=0).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 16, 16, generator=g), torch.randint(0, 10, (2,), generator=g)
    spec = AttackSpec("tpgd", 8 / 255, steps=2)
    torch.manual_seed(0); ref = linf_pgd(model, x, y, spec)
    with torch.autocast("cpu", dtype=torch.float16):
        torch.manual_seed(0); x_adv = linf_pgd(model, x, y, spec)
    assert (x_adv - x).abs().mean() > 0.8 * (ref - x).abs().mean()


def test_channels_last_trains_like_contiguous_and_restores_the_layout():
    for method in ("clean", "trades"):
        results = []
        for cl in (False, True):
            model = create_model("digits_resnet", seed=0, width=4)
            # on a CPU channels_last runs PyTorch's own convolution kernels, so the contiguous run does too
            with torch.backends.mkldnn.flags(enabled=cl):
                hist = finetune(model, _data(), method=method, attack="pgd:eps=0.1,steps=2", epochs=1, progress=False, channels_last=cl)
            results.append((hist.last["loss"], model))
        (l0, m0), (l1, m1) = results
        if method == "clean":  # the same training, to rounding
            assert l0 == pytest.approx(l1, abs=1e-5)
            assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(m0.state_dict().values(), m1.state_dict().values()))
        else:  # PGD steps follow gradient signs, which rounding can flip for a few pixels: the loss agrees, not every weight
            assert abs(l0 - l1) < 1e-2
        conv = next(m for m in m1.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous()


def test_bad_amp_is_refused_in_one_line():
    with pytest.raises(ValueError, match="amp must be"):
        finetune(create_model("digits_resnet", width=4), _data(), epochs=1, progress=False, amp="fp8")


def test_gpu_check_dry_mode_prints_one_table_with_every_row(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry"], capture_output=True, text=True,
                         timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    text = (tmp_path / "gpu_check.txt").read_text()
    assert text.strip() in res.stdout
    for what in ("full MRS", "TRADES step", "torch.compile", "pruned 50%", "pruned 75%", "DDP TRADES", "where that epoch spent", "pytest -m cuda"):
        line = next((l for l in text.splitlines() if what in l), None)
        assert line is not None, f"no row for {what!r}:\n{text}"
        assert "not measured" not in line, line


# ---------------------------------------------------------------- on a GPU (benchmarks/gpu_check.sh)
@pytest.mark.cuda
def test_cuda_training_step_with_amp_does_not_synchronise_with_the_host():
    dev = torch.device("cuda")
    model = create_model("resnet18", "cifar10", seed=0).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(32, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,), device=dev)
    sums = torch.zeros(3, device=dev, dtype=torch.float64)
    for debug in ("default", "error"):  # the first step may initialise lazily (cuDNN, allocator); the second must not sync
        torch.cuda.set_sync_debug_mode(debug)
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss, logits = training_loss(model, x, y, "trades", "pgd:eps=8/255,steps=3")
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            sums[0] += loss.detach().double() * len(y); sums[1] += (logits.argmax(1) == y).sum(); sums[2] += len(y)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(sums).all()


@pytest.mark.cuda
@pytest.mark.parametrize("amp", ["auto", "fp16"])
def test_cuda_finetune_with_amp_channels_last_and_compile(amp):
    model = create_model("digits_resnet", seed=0, width=8).cuda()
    rec = _Dtypes(model)
    # no test data: the recorder sees only the training step and its inner attack (evaluation stays in fp32)
    hist = finetune(model, _data(64), None, method="trades", attack="pgd:eps=0.1,steps=2", epochs=2, progress=False,
                    amp=amp, channels_last=True, compile=amp == "auto")
    low = torch.float16 if amp == "fp16" else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if amp != "auto": assert rec.seen[True] == rec.seen[False] == {low}  # (compiled graphs skip Python hooks)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in hist.epochs)
    hist = finetune(model, _data(64), _data(32), method="trades", attack="pgd:eps=0.1,steps=2", epochs=1, progress=False,
                    amp=amp, channels_last=True)
    assert "robust_acc" in hist.last


@pytest.mark.cuda
def test_cuda_mrs_vmap_gives_the_loop_scores():
    from robust_prune.mrs import compute_mrs
    model = create_model("digits_resnet", seed=0, width=8).cuda().eval()
    x, y = next(iter(_data(64, 64)))
    x, y = x.cuda(), y.cuda()
    kw = dict(method="mrs", alphas=5, sigma_points=5, draws=4)
    a, b = compute_mrs(model, x, y, batch="vmap", **kw), compute_mrs(model, x, y, batch="loop", **kw)
    assert a.scores.keys() == b.scores.keys()
    same = sum(abs(a.scores[k] - b.scores[k]) <= 1e-4 * max(1.0, abs(b.scores[k])) or a.scores[k] == b.scores[k] for k in a.scores)
    assert same >= len(a.scores) - 1, (a.scores, b.scores)


def test_a_compile_mode_is_taken_and_a_wrong_one_refused_before_training():
    from robust_prune.finetune import COMPILE_MODES, _compiler
    assert _compiler(False) is None and _compiler(True).keywords == {"mode": None}
    assert [_compiler(m).keywords["mode"] for m in COMPILE_MODES] == list(COMPILE_MODES)
    model = create_model("digits_resnet", width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"^compile must be True, False or a torch.compile mode \(default, reduce-overhead, "):
        finetune(model, _data(), epochs=1, progress=False, compile="fast")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_synced_batchnorm_swaps_the_layers_in_and_out_keeping_parameters_and_the_statistics_trained():
    from robust_prune.finetune import _synced_batchnorm
    bn_kinds = lambda m: {type(l).__name__ for l in m.modules() if isinstance(l, torch.nn.modules.batchnorm._BatchNorm)}
    model = create_model("digits_resnet", seed=0, width=4).eval()
    x = torch.rand(8, *model.arch_config["input_shape"])
    params, before = dict(model.named_parameters()), model(x)
    with _synced_batchnorm(model, True):
        assert bn_kinds(model) == {"SyncBatchNorm"}
        assert all(p is params[n] for n, p in model.named_parameters())  # the optimiser's parameters stay the model's
        torch.testing.assert_close(model(x), before)
        model.double().float()  # the layers' buffers are new tensors now ...
        model.train(); model(x); model.eval()  # ... whose statistics move (no process group here: plain batch norm)
        inside = model(x)
    assert bn_kinds(model) == {"BatchNorm2d"} and not model.training
    assert all(p is params[n] for n, p in model.named_parameters())
    torch.testing.assert_close(model(x), inside)  # the statistics trained while synced are the layers' own afterwards
    assert not torch.allclose(inside, before)
    with _synced_batchnorm(model, False): assert bn_kinds(model) == {"BatchNorm2d"}


@pytest.mark.cuda
def test_cuda_sync_bn_under_torchrun_trains_and_gives_back_plain_batch_norm(tmp_path):
    import json
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torch.cuda.device_count()), "--standalone",
           str(ROOT / "benchmarks" / "ddp_epoch.py"), "--device", "cuda", "--arch", "digits_resnet", "--size", "8",
           "--train-images", "256", "--test-images", "64", "--batch", "32", "--sync-bn", "--json", str(tmp_path / "s.json")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "s.json").read_text())
    assert out["norm_layers"] == ["BatchNorm2d"] and out["history"]["epochs"][-1]["loss"] < 10


def test_channels_last_on_a_cpu_trains_without_onednn_and_gets_the_contiguous_gradients():
    # a 1x1 stride-2 convolution on 64 images of 4x8x8: oneDNN's channels-last weight gradient of it is wrong on some CPUs
    import warnings
    from torch.utils.data import DataLoader, TensorDataset
    from robust_prune.finetune import Callback

    class Seen(Callback):
        def on_batch_end(self, run, loss): self.onednn = torch.backends.mkldnn.enabled

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1, stride=2, bias=False), torch.nn.Flatten(), torch.nn.Linear(128, 10))
    x, y = torch.rand(64, 4, 8, 8), torch.arange(64) % 10
    trained, seen = [], []
    for cl in (False, True):
        m, cb = copy.deepcopy(net), Seen()
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            finetune(m, DataLoader(TensorDataset(x, y), batch_size=64), method="clean", epochs=1, lr=0.5, progress=False,
                     channels_last=cl, callbacks=[cb])
        trained.append(m[0].weight.detach())
        seen.append((cb.onednn, any("trains without oneDNN" in str(w.message) for w in rec)))
    assert seen == [(torch.backends.mkldnn.enabled, False), (False, True)] and torch.backends.mkldnn.enabled
    moved = (trained[0] - net[0].weight).abs().max()
    assert moved > 0 and (trained[1] - trained[0]).abs().max() <= 1e-4 * moved