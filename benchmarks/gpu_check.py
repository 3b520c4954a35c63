"""One table that checks the GPU path: full MRS on ResNet-18, TRADES throughput with AMP against a reference step
(and with torch.compile and batch 512), pruned vs dense latency, one epoch of DDP fine-tuning under torchrun, and the
CUDA-marked tests.

    benchmarks/gpu_check.sh            # on one GPU, about 7-8 minutes
    benchmarks/gpu_check.sh --dry      # the same code paths, tiny, on the CPU (CI runs this)

Each part runs in its own process with a time limit, so a failure or an overrun leaves its row "not measured" and
the others still run. With $OUT set, the table is also written to $OUT/gpu_check.txt.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT = "not measured"


def _sync(dev):
    import torch
    if dev.type == "cuda": torch.cuda.synchronize(dev)


# ---------------------------------------------------------------- (a) full MRS metric on ResNet-18
def part_mrs(dev, dry: bool) -> list[dict]:
    import torch
    from robust_prune.attacks import perturb
    from robust_prune.models import create_model
    from robust_prune.mrs import compute_mrs
    if dry:
        model, n, kw = create_model("digits_resnet", "digits", seed=0, width=4).to(dev), 16, dict(alphas=3, sigma_points=3, draws=2)
    else:
        model, n, kw = create_model("resnet18", "cifar10", seed=0).to(dev), 128, {}
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, *model.arch_config["input_shape"], generator=g).to(dev)
    y = torch.randint(0, 10, (n,), generator=g).to(dev)
    x_adv = perturb(model.eval(), x, y, "fgsm:eps=8/255")
    _sync(dev); t0 = time.perf_counter()
    rep = compute_mrs(model, x_adv, y, method="mrs", batch="vmap", **kw)
    _sync(dev); s = time.perf_counter() - t0
    finite = sum(v < float("inf") for v in rep.scores.values())
    what = "full MRS, digits_resnet (dry), 16 images, 3x3 grid x 2 draws, vmap" if dry else "full MRS, ResNet-18 (random init), 128 images 3x32x32, vmap"
    return [dict(what=what, result=f"{s:.1f} s; {rep.forwards} perturbed forwards; {finite}/{len(rep.scores)} scores finite",
                 target="<= 120 s", ok=None if dry else s <= 120)]


# ---------------------------------------------------------------- (b) TRADES throughput
def reference_trades_step(model, opt, x, y, eps: float, alpha: float, steps: int, beta: float):
    "A straightforward TRADES step (Zhang et al.'s code): KL-PGD in eval mode, then CE + beta * KL, fp32."
    import torch
    import torch.nn.functional as F
    model.eval()
    p_nat = F.softmax(model(x), dim=1).detach()
    x_adv = (x + 0.001 * torch.randn_like(x)).clamp(0, 1).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss_kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_nat, reduction="sum")
        grad, = torch.autograd.grad(loss_kl, [x_adv])
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1).detach()
    model.train()
    opt.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y) + beta * F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
    loss.backward()
    opt.step()
    return loss.detach()


def trades_throughput(dev, arch="resnet18", batch=128, batches=32, rounds=3, steps=10, amp="auto", size=32, channels_last=False,
                      compile=False):
    "Images per second of `finetune(method='trades')` and of the reference step, measured alternately in one process."
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from robust_prune.finetune import finetune, make_optimizer
    from robust_prune.models import create_model
    info = "cifar10" if arch != "digits_resnet" else "digits"
    kw = dict(width=4) if arch == "digits_resnet" else {}
    g = torch.Generator().manual_seed(0)
    shape = create_model(arch, info, **kw).arch_config["input_shape"]
    data = TensorDataset(torch.rand(batch * batches, *shape, generator=g), torch.randint(0, 10, (batch * batches,), generator=g))
    loader = DataLoader(data, batch_size=batch, shuffle=True, pin_memory=dev.type == "cuda", generator=torch.Generator().manual_seed(0))
    ours, ref = create_model(arch, info, seed=0, **kw).to(dev), create_model(arch, info, seed=0, **kw).to(dev)
    eps = 8 / 255
    opt = make_optimizer(ref, "sgd", 0.01)
    finetune(ours, loader, method="trades", attack=f"pgd:eps=8/255,steps={steps}", epochs=1, progress=False, amp=amp,
             channels_last=channels_last, compile=compile)  # warm-up (and compilation)
    for x, y in loader: reference_trades_step(ref, opt, x.to(dev), y.to(dev), eps, 2.5 * eps / steps, steps, 6.0)
    t_ours, t_ref = [], []
    for _ in range(rounds):
        _sync(dev); t0 = time.perf_counter()
        finetune(ours, loader, method="trades", attack=f"pgd:eps=8/255,steps={steps}", epochs=1, progress=False, amp=amp,
                 channels_last=channels_last, compile=compile)
        _sync(dev); t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for x, y in loader: reference_trades_step(ref, opt, x.to(dev, non_blocking=True), y.to(dev, non_blocking=True), eps, 2.5 * eps / steps, steps, 6.0)
        _sync(dev); t_ref.append(time.perf_counter() - t0)
    n = batch * batches
    return n / min(t_ours), n / min(t_ref)


def part_trades(dev, dry: bool) -> list[dict]:
    from robust_prune.finetune import _resolve_amp
    amp = _resolve_amp("auto", dev) or "fp32"
    what = ("TRADES step, digits_resnet (dry), batch 16, PGD-2" if dry else "TRADES step, ResNet-18, batch 128, PGD-10 (KL), 3x32x32")
    rows = []
    for cl in (False, True):
        if dry: ours, ref = trades_throughput(dev, "digits_resnet", batch=16, batches=2, rounds=1, steps=2, channels_last=cl)
        else: ours, ref = trades_throughput(dev, channels_last=cl)
        rows.append(dict(what=f"{what}: finetune (amp {amp}{', channels-last' if cl else ''}) vs reference (fp32)",
                         result=f"x{ours / ref:.2f} ({ours:.0f} vs {ref:.0f} img/s)", target=">= x1.3" if dev.type == "cuda" else ">= x1.0",
                         ok=None if dry else ours / ref >= (1.3 if dev.type == "cuda" else 1.0)))
    return rows


def part_variants(dev, dry: bool) -> list[dict]:
    "(b) again with torch.compile (default mode, and CUDA graphs through 'reduce-overhead') and with batch 512; a failing variant is one row."
    from robust_prune.finetune import _resolve_amp
    amp = _resolve_amp("auto", dev) or "fp32"
    variants = [(128, False), (128, True), (128, "reduce-overhead"), (512, False), (512, True)]
    if dry: variants = [(16, False), (16, True)]
    rows = []
    for batch, comp in variants:
        how = f"amp {amp}" + ("" if comp is False else ", torch.compile" + ("" if comp is True else f" mode={comp}"))
        what = (f"TRADES step, digits_resnet (dry), batch {batch}, PGD-2: finetune ({how}) vs reference (fp32)" if dry else
                f"TRADES step, ResNet-18, batch {batch}, PGD-10 (KL), 3x32x32: finetune ({how}) vs reference (fp32)")
        try:
            t0 = time.time()
            if dry: ours, ref = trades_throughput(dev, "digits_resnet", batch=batch, batches=2, rounds=1, steps=2, compile=comp)
            else: ours, ref = trades_throughput(dev, batch=batch, batches=max(8, 4096 // batch), rounds=2, compile=comp)
            rows.append(dict(what=what, result=f"x{ours / ref:.2f} ({ours:.0f} vs {ref:.0f} img/s; {time.time() - t0:.0f} s with warm-up)",
                             target=">= x1.3" if dev.type == "cuda" else ">= x1.0",
                             ok=None if dry else ours / ref >= (1.3 if dev.type == "cuda" else 1.0)))
        except Exception as e:  # noqa: BLE001 - one variant's failure is a row, not the end of the part
            rows.append(dict(what=what, result=f"{NOT} ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})", target="", ok=None))
        print("ROW " + json.dumps(rows[-1]), flush=True)
    return []


# ---------------------------------------------------------------- (c) pruned vs dense latency
def part_latency(dev, dry: bool) -> list[dict]:
    from robust_prune.allocation import allocate
    from robust_prune.evaluation import count_macs, measure_latency
    from robust_prune.models import create_model
    from robust_prune.pruning import prune
    arch, info, kw, batch = ("digits_resnet", "digits", dict(width=8), 8) if dry else ("resnet18", "cifar10", {}, 256)
    dense = create_model(arch, info, seed=0, **kw).to(dev).eval()
    reps = dict(repeats=3, warmup=1) if dry else dict(repeats=30, warmup=10)
    t_dense, m_dense = measure_latency(dense, batch_size=batch, **reps), count_macs(dense)
    rows = []
    for target in (0.5, 0.75):
        pruned = copy.deepcopy(dense)
        prune(pruned, allocate(None, pruned, target, rule="uniform"))
        t, m = measure_latency(pruned.eval(), batch_size=batch, **reps), count_macs(pruned)
        ratio = (t_dense / t) / (m_dense / m)
        rows.append(dict(what=f"{arch} pruned {target:.0%} of params (uniform), batch {batch}, fp32",
                         result=f"{t_dense:.2f} -> {t:.2f} ms; speed-up x{t_dense / t:.2f} / MACs x{m_dense / m:.2f} = {ratio:.2f}",
                         target="speed-up / MACs reduction, report", ok=None))
    return rows


# ---------------------------------------------------------------- (d) one DDP epoch under torchrun
def part_ddp(dev, dry: bool) -> list[dict]:
    import torch
    import tempfile
    out = Path(tempfile.mkdtemp()) / "ddp.json"
    args = (["--arch", "digits_resnet", "--size", "8", "--train-images", "64", "--test-images", "32", "--batch", "16",
             "--attack", "pgd:eps=0.1,steps=2", "--eval-attack", "pgd:eps=0.1,steps=2"] if dry else
            ["--arch", "resnet18", "--train-images", "10240", "--test-images", "512", "--batch", "128", "--workers", "4"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--standalone",
           str(ROOT / "benchmarks" / "ddp_epoch.py"), "--device", dev.type, "--epochs", "1", "--profile", "--json", str(out), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    if res.returncode != 0 or not out.is_file():
        raise RuntimeError(f"torchrun exited with {res.returncode}: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ''}")
    d = json.loads(out.read_text())
    row = d["history"]["epochs"][-1]
    ok = d["world"] == 1 and row["loss"] == row["loss"]
    return [dict(what=f"one epoch of DDP TRADES fine-tuning under torchrun --nproc_per_node 1 ({'digits_resnet, 64 images (dry)' if dry else 'ResNet-18, 10,240 images 3x32x32, batch 128'})",
                 result=f"{d['seconds']:.1f} s ({d['images_per_second']:.0f} img/s incl. eval), loss {row['loss']:.3f}, world {d['world']}",
                 target="runs", ok=ok),
            _profile_row(d["history"].get("profile", []))]


def _profile_row(profile: list[dict]) -> dict:
    "Where the DDP epoch spent its time, stage by stage (finetune(profile=True))."
    if not profile: return dict(what="  where that epoch spent its time", result="no profile recorded", target="report", ok=False)
    p = profile[-1]
    shares = ", ".join(f"{s} {p[s] / p['seconds']:.0%}" for s in ("data", "attack", "forward/backward", "optimizer", "evaluation", "other") if s in p)
    return dict(what="  where that epoch spent its time (profiled: device synchronised at each stage boundary)", result=shares, target="report", ok=None)


# ---------------------------------------------------------------- (e) CUDA-marked tests
def part_tests(dev, dry: bool) -> list[dict]:
    try:
        import pytest  # noqa: F401
    except ImportError:
        return [dict(what="pytest -m cuda tests/test_gpu_path.py", result=f"{NOT} (pytest is not installed)", target="all pass", ok=None)]
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_gpu_path.py")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=_env())
    last = (res.stdout.strip().splitlines() or ["(no output)"])[-1]
    ok = res.returncode == 0 and "passed" in last if dev.type == "cuda" else res.returncode in (0, 5)
    return [dict(what="pytest -m cuda tests/test_gpu_path.py" + (" (CPU: skipped)" if dev.type != "cuda" else ""),
                 result=last.strip("= "), target="all pass", ok=ok)]


PARTS = {"tests": (part_tests, 100), "trades": (part_trades, 150), "variants": (part_variants, 420), "latency": (part_latency, 60),
         "ddp": (part_ddp, 100), "mrs": (part_mrs, 100)}
TITLES = {"mrs": "(a) full MRS", "trades": "(b) TRADES throughput", "variants": "(b') TRADES: compile, batch 512", "latency": "(c) pruned latency", "ddp": "(d) DDP epoch",
          "tests": "(e) CUDA tests"}


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_part(name: str, device: str, dry: bool) -> list[dict]:
    "Run one part in a fresh process (so an error, an overrun or a CUDA fault costs one row)."
    fn, limit = PARTS[name]
    if dry: limit = 60
    cmd = [sys.executable, __file__, "--part", name, "--device", device] + (["--dry"] if dry else [])
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=_env())
    except subprocess.TimeoutExpired as e:  # the rows it printed before the limit are kept
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        done = [json.loads(l[4:]) for l in out.splitlines() if l.startswith("ROW ")]
        return done + [dict(what=TITLES[name], result=f"{NOT} (over its {limit} s limit)", target="", ok=None)]
    lines = [l for l in res.stdout.splitlines() if l.startswith("ROW ")]
    if res.returncode != 0 or not lines:
        err = (res.stderr.strip().splitlines() or ["no output"])[-1][:160]
        return [dict(what=TITLES[name], result=f"{NOT} ({err})", target="", ok=None)]
    return [json.loads(l[4:]) for l in lines]


def table(rows: list[dict], header: str) -> str:
    cells = [["what", "result", "target", "verdict"]] + [
        [r["what"], r["result"], r.get("target", ""), {True: "met", False: "NOT met", None: "-"}[r.get("ok")]] for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(4)]
    line = lambda c: "| " + " | ".join(x.ljust(w[i]) for i, x in enumerate(c)) + " |"
    return "\n".join([header, line(cells[0]), "|" + "|".join("-" * (v + 2) for v in w) + "|"] + [line(c) for c in cells[1:]])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="tiny versions of every part, on the CPU (seconds, not minutes)")
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--parts", default="tests,trades,variants,latency,ddp,mrs", help="comma-separated: " + ",".join(PARTS))
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)  # internal: run one part in this process
    a = p.parse_args(argv)
    import torch
    device = a.device or ("cpu" if a.dry or not torch.cuda.is_available() else "cuda")
    if a.part:
        torch.manual_seed(0)
        if device == "cpu": torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        for row in PARTS[a.part][0](torch.device(device), a.dry): print("ROW " + json.dumps(row), flush=True)
        return 0
    names = [n.strip() for n in a.parts.split(",") if n.strip()]
    unknown = set(names) - set(PARTS)
    if unknown: raise SystemExit(f"gpu_check: unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    header = (f"gpu_check{' --dry' if a.dry else ''} on {name}, torch {torch.__version__}, "
              f"{time.strftime('%Y-%m-%d %H:%M')}")
    rows, t0 = [], time.time()
    for n in ["mrs", "trades", "variants", "latency", "ddp", "tests"]:
        if n not in names: continue
        t = time.time()
        got = run_part(n, device, a.dry)
        rows += got
        print(f"{TITLES[n]}: {time.time() - t:.0f} s; " + "; ".join(r["result"] for r in got), file=sys.stderr, flush=True)
    text = table(rows, header) + f"\ntotal {time.time() - t0:.0f} s\n"
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / "gpu_check.txt").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
