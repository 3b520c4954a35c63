"""How much the full MRS metric moves with the noise seed, and what each estimator change buys, side by side.

Run from the repository root:
    python benchmarks/bench_mrs_seeds.py --network digits [--seeds 5] [--first-seed 0] [--threads 2] [--configs NAME ...]
    python benchmarks/bench_mrs_seeds.py --network resnet18 --device cuda     # the trained 3×32×32 ResNet-18
For every configuration the same network, the same fixed adversarial batch and the same θ⁰ are scored with noise seeds
first-seed … first-seed + seeds − 1 (0 … 4 by default). Printed per configuration: mean seconds per run, Spearman rank correlation between the seeds' scores
(smallest and mean over all pairs), and the per-group coefficient of variation (std / mean over the seeds; largest
and mean over the groups). Not a test: it measures, and prints a Markdown table for BENCHMARKS.md; with --json the
per-seed scores are written too.
"""
import argparse
import itertools
import json
import math
import os
import platform
import statistics
import time

import torch
from scipy.stats import spearmanr

from robust_prune.allocation import CostModel, allocate
from robust_prune.attacks import AttackSpec, adversarial_batch
from robust_prune.mrs import compute_mrs, prunable_groups

# name -> compute_mrs settings; the last one is the package's default
CONFIGS = {
    "grid-exact, 11 σ (ordered), 10 draws": dict(search="ordered", sigma_points=11, slices=1, antithetic=False, draws=10, refine=1),
    "previous default: bisect, 11 σ, 10 draws": dict(search="bisect", sigma_points=11, slices=1, antithetic=False, draws=10, refine=1),
    "root search, σ every 1%, 10 draws": dict(slices=1, antithetic=False, draws=10, refine=1),
    "+ antithetic pairs": dict(slices=1, draws=10, refine=1),
    "+ 16 slices (160 draws, same images)": dict(slices=16, draws=10, refine=1),
    "+ 32 slices (320 draws, same images)": dict(slices=32, draws=10, refine=1),
    "+ 64 slices (640 draws, same images)": dict(slices=64, draws=10, refine=1),
    "16 slices, 20 passes (320 draws, twice the images)": dict(slices=16, draws=20, refine=1),
    "20 passes, refined up to 3 blocks": dict(draws=20, refine=3),
    "12 passes, refined up to 4 blocks": dict(draws=12, refine=4),
    "10 passes, refined up to 6 blocks": dict(draws=10, refine=6),
    "default": dict(),
}


def network(name: str, device: str, epochs: int):
    "The trained network and its fixed adversarial batch."
    if name == "digits":
        from robust_prune.data import get_dataset
        from robust_prune.finetune import robust_digits_model
        model = robust_digits_model(seed=0, cache=device == "cpu").to(device)
        adv = adversarial_batch(model, get_dataset("digits", train=False), AttackSpec("pgd", 0.1, steps=10), n=256, seed=0)
        return model, adv
    from robust_prune.data import get_loaders
    from robust_prune.finetune import finetune
    from robust_prune.models import create_model
    dls = get_loaders("digits", batch_size=64, size=32, channels=3, seed=0)
    model = create_model("resnet18", dls.info, seed=1).to(device)  # as benchmarks/bench_mrs_resnet18.py trains it
    finetune(model, dls.train, dls.test, method="pgd-at", attack="pgd:eps=0.1,steps=2", epochs=epochs, lr=0.05,
             schedule="onecycle", eval_samples=256, progress=False, seed=0)
    model.eval()
    adv = adversarial_batch(model, dls.test.dataset, AttackSpec("pgd", 0.1, steps=10), n=128, seed=0)
    return model, adv


def spread(tab: list[dict]) -> dict:
    names = list(tab[0])
    rc = [spearmanr([a[n] for n in names], [b[n] for n in names]).statistic for a, b in itertools.combinations(tab, 2)]
    cv = {n: statistics.stdev([t[n] for t in tab]) / statistics.mean([t[n] for t in tab]) for n in names}
    mean = {n: statistics.mean(t[n] for t in tab) for n in names}
    # pairs of groups ordered differently by some two seeds, with the gap between their mean scores
    swapped = sorted({tuple(sorted((g, h))) for a, b in itertools.combinations(tab, 2) for g, h in itertools.combinations(names, 2)
                      if (a[g] - a[h]) * (b[g] - b[h]) < 0})
    gaps = {f"{g} / {h}": abs(mean[g] - mean[h]) / min(mean[g], mean[h]) for g, h in swapped}
    return dict(rank_min=min(rc), rank_mean=statistics.mean(rc), cv_max=max(cv.values()), cv_mean=statistics.mean(cv.values()),
                cv=cv, worst=max(cv, key=cv.get), swapped=gaps)


def allocation_spread(model, reports, sparsities=(0.5, 0.7, 0.9), rule="per-param") -> dict:
    "The decision the scores feed: per budget, the largest spread over seeds (max − min) of a group's pruning ratio."
    cm = CostModel(model)
    out = {}
    for sp in sparsities:
        ratios = [allocate(r, model, sp, rule, cost_model=cm).ratios for r in reports]
        out[sp] = max(max(rt[n] for rt in ratios) - min(rt[n] for rt in ratios) for n in ratios[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--network", choices=("digits", "resnet18"), default="digits")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="noise seeds first-seed … first-seed + seeds − 1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="resnet18: PGD-AT epochs")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), help=f"any of: {', '.join(CONFIGS)}")
    ap.add_argument("--json", default=None, help="write every seed's scores here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}"
          f"{', ' + torch.cuda.get_device_name(dev) if dev.type == 'cuda' else ''}, load average at start {os.getloadavg()[0]:.2f}\n")
    t0 = time.time()
    model, adv = network(args.network, args.device, args.epochs)
    groups = prunable_groups(model, adv.x_adv[:1])
    print(f"{args.network}: {len(groups)} groups, {len(adv)} PGD-10 images (accuracy on them {100 * adv.adv_acc:.1f}%), "
          f"ready in {time.time() - t0:.0f} s\n")
    print(f"| estimator ({args.seeds} noise seeds) | s per run | rank corr. min / mean | CV max / mean (worst group) "
          f"| per-param ratio spread at 50 / 70 / 90% (pp) |\n|---|---|---|---|---|")
    out, swaps = {}, []
    for name in args.configs:
        runs = [compute_mrs(model, adv.x_adv, adv.y, groups=groups, seed=s, **CONFIGS[name])
                for s in range(args.first_seed, args.first_seed + args.seeds)]
        tab = [r.scores for r in runs]
        if any(not math.isfinite(v) or v <= 0 for t in tab for v in t.values()):
            print(f"| {name} | {statistics.mean(r.seconds for r in runs):.1f} | a score is 0 or infinite: {tab} | | |")
            continue
        s = spread(tab)
        s["ratio_spread"] = allocation_spread(model, runs)
        print(f"| {name} | {statistics.mean(r.seconds for r in runs):.1f} | {s['rank_min']:.3f} / {s['rank_mean']:.3f} | "
              f"{100 * s['cv_max']:.0f}% / {100 * s['cv_mean']:.0f}% ({s['worst']}) | "
              f"{' / '.join(f'{100 * v:.1f}' for v in s['ratio_spread'].values())} |", flush=True)
        swaps.append((name, s["swapped"]))
        out[name] = dict(settings=CONFIGS[name], seconds=[r.seconds for r in runs], scores=tab, **s)
    if args.json:
        with open(args.json, "w") as f: json.dump(dict(network=args.network, device=args.device, results=out), f, indent=1)
    for name, gaps in swaps:
        print(f"\n{name}: groups some two seeds order differently (gap between their mean scores): "
              + (", ".join(f"{k} ({100 * v:.1f}%)" for k, v in gaps.items()) or "none"))
    print(f"\ntotal {time.time() - t0:.0f} s; load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
