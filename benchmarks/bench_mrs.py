"""Benchmark of robust_prune.mrs: estimator and full-metric times, ways of evaluating perturbed copies, ResNet-18 on CPU.

Run from the repository root:  python benchmarks/bench_mrs.py [--threads 2] [--rounds 3] [--skip-grid] [--skip-resnet] [--full-resnet]
Not a test: it measures wall time and prints a Markdown table for BENCHMARKS.md.
"""
import argparse
import math
import os
import platform
import statistics
import time

import torch
from scipy.stats import spearmanr

from robust_prune.attacks import AttackSpec, adversarial_batch, perturb
from robust_prune.data import get_dataset
from robust_prune.finetune import robust_digits_model
from robust_prune.models import create_model
from robust_prune.mrs import compute_mrs, prunable_groups

ESTIMATORS = ("taylor", "rewind", "noise", "worst")


def rho(a, b) -> float:
    keys = list(a.scores)
    return float(spearmanr([a.scores[k] for k in keys], [b.scores[k] for k in keys]).statistic)


def dependent_mac_share(model, x, groups) -> dict[str, float]:
    "Per group: multiply-accumulates of the convolutions and linear layers that depend on it, over those of the network."
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp
    from robust_prune.partial import _touched
    gm = fx.symbolic_trace(model)
    ShapeProp(gm).propagate(x)
    macs = {}
    for n in gm.graph.nodes:
        if n.op != "call_module": continue
        m = gm.get_submodule(n.target)
        if isinstance(m, torch.nn.Conv2d):
            macs[n] = n.meta["tensor_meta"].shape.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            macs[n] = n.meta["tensor_meta"].shape.numel() * m.in_features
    total = sum(macs.values())
    share = {}
    for g in groups:
        touched = _touched(gm, set(g.tensors))
        share[g.name] = sum(v for n, v in macs.items() if n in touched) / total
    return share


def batching_ceiling(model, x, rounds: int, copies: int = 10) -> None:
    "What folding copies into one batch can gain per image on this machine, measured side by side (median over rounds)."
    def clock(f, reps: int = 5) -> float:
        f()
        t0 = time.perf_counter()
        for _ in range(reps): f()
        return (time.perf_counter() - t0) / reps
    sizes = sorted({1, 2, 4, copies})
    xs = {b: x.repeat(b, 1, 1, 1) for b in sizes}
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == m.out_channels)
    with torch.no_grad():  # the input a group's second convolution sees under vmap: one activation per copy
        a = torch.randn(len(x), copies * conv.in_channels, x.shape[-2], x.shape[-1])
        w = conv.weight.repeat(copies, 1, 1, 1) + 0.01 * torch.randn(copies * conv.out_channels, *conv.weight.shape[1:])
        parts, ws = a.chunk(copies, 1), w.chunk(copies, 0)
        kw = dict(stride=conv.stride, padding=conv.padding)
        t: dict = {}
        for _ in range(rounds):
            for b in sizes: t.setdefault(b, []).append(clock(lambda: model(xs[b])) / b)
            t.setdefault("grouped", []).append(clock(lambda: torch.nn.functional.conv2d(a, w, groups=copies, **kw)))
            t.setdefault("looped", []).append(clock(lambda: [torch.nn.functional.conv2d(p, q, **kw) for p, q in zip(parts, ws)]))
    med = {k: statistics.median(v) for k, v in t.items()}
    print(f"|   whole-network forward, {len(x)} images per copy, copies folded into one batch: " +
          ", ".join(f"{b} → {1e3 * med[b]:.1f} ms per copy" for b in sizes) +
          f" (×{med[1] / min(med[b] for b in sizes):.2f} at best) | | |")
    print(f"|   one {conv.in_channels}→{conv.out_channels} 3×3 convolution on {copies} copies' own activations: "
          f"grouped (as vmap runs it) {1e3 * med['grouped']:.1f} ms, one per copy {1e3 * med['looped']:.1f} ms "
          f"(×{med['looped'] / med['grouped']:.2f}) | | |")


def row(what: str, seconds: float, note: str = "") -> None:
    print(f"| {what} | {seconds:.1f} | {note} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--skip-grid", action="store_true", help="skip the 121-point reference grid on digits")
    ap.add_argument("--skip-resnet", action="store_true", help="skip the ResNet-18 part")
    ap.add_argument("--full-resnet", action="store_true",
                    help="also run the full metric (default bisect search) on the random-init ResNet-18 once (about 5 min on 2 cores)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the side-by-side comparison (median reported)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"load average at start {os.getloadavg()[0]:.2f}\n")

    # --- digits: the robust digits_resnet, 256 PGD-10 examples ---------------------------------------------
    model = robust_digits_model()
    adv = adversarial_batch(model, get_dataset("digits", train=False), AttackSpec("pgd", 0.1, steps=10), n=256)
    groups = prunable_groups(model, adv.x_adv[:1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    print(f"## digits_resnet, {len(groups)} groups, {len(adv)} PGD-10 images 8x8\n")
    print("| what | seconds | note |\n|---|---|---|")
    est = {}
    for m in ESTIMATORS:
        est[m] = compute_mrs(model, adv.x_adv, adv.y, method=m, groups=groups)
        row(f"digits `{m}`", est[m].seconds, f"{est[m].forwards} forwards")
    full = {}
    for search in ("bisect", "ordered") + (() if args.skip_grid else ("grid",)):
        full[search] = compute_mrs(model, adv.x_adv, adv.y, groups=groups, search=search)
        row(f"digits full MRS, search={search} (11 α × 11 σ × 10 draws)", full[search].seconds,
            f"{full[search].forwards} perturbed forwards")
    ref = full.get("grid", full["ordered"])
    for search, r in full.items():
        same = sum(r.scores[k] == ref.scores[k] for k in r.scores)
        print(f"|   {search} vs {'grid' if 'grid' in full else 'ordered'}: identical scores in {same}/{len(r)} groups, "
              f"Spearman {rho(r, ref):.3f} | | |")
    for m in ESTIMATORS:
        print(f"|   Spearman(`{m}`, full MRS grid-exact) = {rho(est[m], ref):.3f} | | |")

    # ways of evaluating the copies, side by side: every configuration once per round, median over rounds
    configs = {"plain loop": dict(batch="loop", reuse=False, early_exit=False),
               "vmap": dict(batch="vmap", reuse=False, early_exit=False),
               "loop + reuse": dict(batch="loop", reuse=True, early_exit=False),
               "vmap + reuse": dict(batch="vmap", reuse=True, early_exit=False),
               "vmap + reuse + early exit (default on a GPU)": dict(batch="vmap", reuse=True, early_exit=True),
               "loop + reuse + early exit (default on a CPU)": dict(batch="loop", reuse=True, early_exit=True)}
    for label, kw in (("noise estimator (9 groups × 10 draws)", dict(method="noise")),
                      ("full MRS, bisect", dict(method="mrs", search="bisect"))):
        t, scores, fw = {}, {}, {}
        for _ in range(args.rounds):
            for name, c in configs.items():
                if kw["method"] == "noise":
                    if c["early_exit"]: continue  # the estimator has no threshold to exit on
                    c = {k: v for k, v in c.items() if k != "early_exit"}
                r = compute_mrs(model, adv.x_adv, adv.y, groups=groups, **kw, **c)
                t.setdefault(name, []).append(r.seconds)
                scores[name], fw[name] = r.scores, r.forwards
        base = statistics.median(t["plain loop"])
        for name, ts in t.items():
            same = sum(scores[name][k] == scores["plain loop"][k] for k in scores[name])
            close = sum(math.isclose(scores[name][k], scores["plain loop"][k], rel_tol=1e-4) for k in scores[name])
            note = "reference" if name == "plain loop" else f"×{base / statistics.median(ts):.2f} vs plain loop"
            row(f"digits {label}: {name}", statistics.median(ts),
                f"{note}; {fw[name]} forwards; scores equal to the plain loop's: {same}/{len(groups)} exactly, "
                f"{close}/{len(groups)} within 1e-4")
    frac = dependent_mac_share(model, adv.x_adv, groups)
    K = 10
    bound = K * len(frac) / sum(1 - f + K * f for f in frac.values())
    print(f"|   MAC share of the part of the network each group can change: " +
          ", ".join(f"{k} {v:.2f}" for k, v in frac.items()) + " | | |")
    print(f"|   so any evaluation that recomputes that part for every copy, at the plain loop's speed per MAC, is at most "
          f"×{bound:.2f} faster than the plain loop for {K} copies per group (×{len(frac) / sum(frac.values()):.2f} for many) | | |")
    batching_ceiling(model, adv.x_adv, args.rounds)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "state_dict changed"

    if args.skip_resnet: return
    # --- ResNet-18, CIFAR shape, 128 FGSM images of a random-init network ------------------------------------
    r18 = create_model("resnet18", "cifar10", seed=1).eval()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(128, 3, 32, 32, generator=gen), torch.randint(0, 10, (128,), generator=gen)
    x_adv = perturb(r18, x, y, "fgsm", seed=0)
    t0 = time.time()
    g18 = prunable_groups(r18, x_adv[:1])
    print(f"\n## ResNet-18 (random init), {len(g18)} groups, 128 FGSM images 32x32\n")
    print("| what | seconds | note |\n|---|---|---|")
    row("ResNet-18 prunable_groups (trace)", time.time() - t0)
    with torch.no_grad():
        r18(x_adv); t0 = time.time(); r18(x_adv)
    row("ResNet-18 one plain forward, 128 images", time.time() - t0)
    res = {}
    for m in ESTIMATORS:
        res[m] = compute_mrs(r18, x_adv, y, method=m, groups=g18)
        row(f"ResNet-18 `{m}`", res[m].seconds, f"{res[m].forwards} forwards")
    # the noise estimator evaluates exactly one (α=1, σ) grid point of 10 draws per group: its per-group time is
    # the cost of one grid point of the full metric for that group
    per_point = {g.name: g.seconds for g in res["noise"].groups}
    pts_bisect = full["bisect"].forwards / 10 / len(groups)
    est_grid = 121 * sum(per_point.values())
    est_bisect = pts_bisect * sum(per_point.values())
    print(f"| ResNet-18 full MRS, grid (extrapolated: 121 points × per-group time of one 10-draw point) | {est_grid:.0f} | "
          f"= {est_grid / 3600:.1f} h, not run |")
    print(f"| ResNet-18 full MRS, bisect (extrapolated: {pts_bisect:.1f} points' worth of draws per group, the mean on digits) | "
          f"{est_bisect:.0f} | = {est_bisect / 3600:.2f} h, not run |")
    print("|   per-group seconds of one 10-draw point: " + ", ".join(f"{k} {v:.1f}" for k, v in per_point.items()) + " | | |")
    if args.full_resnet:
        r = compute_mrs(r18, x_adv, y, groups=g18)
        row("ResNet-18 full MRS, bisect (11 α × 11 σ × 10 draws), run once", r.seconds,
            f"= {r.seconds / 3600:.2f} h; {r.forwards} perturbed forwards ({r.forwards / 10 / len(g18):.1f} points' worth "
            f"of draws per group); scores finite in {sum(math.isfinite(v) for v in r.scores.values())}/{len(g18)} groups")
        print("|   per-group seconds: " + ", ".join(f"{g.name} {g.seconds:.0f}" for g in r.groups) + " | | |")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
