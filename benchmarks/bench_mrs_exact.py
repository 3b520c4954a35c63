"""Does the default root search return the exact grid minimum on the default grid (11 α × 696 σ)?

Run from the repository root:  python benchmarks/bench_mrs_exact.py [--seeds 0 1] [--threads 1] [--device cuda] [--groups NAME ...]
On the demo's robust digits network and its fixed PGD-10 batch (256 images), every group is scored with the package's
defaults twice per noise seed: `search="root"` (the default: bisection in σ per α, assuming feasibility falls as σ
grows) and `search="ordered"` (every grid point by increasing objective until the first feasible one: the exact grid
minimum, no monotonicity assumed). Same draws, same threshold. Prints per group both (score, α, σ) and whether they
are identical, and the points each search evaluated. Not a test: the ordered search on this grid takes minutes.
"""
import argparse
import os
import time

import torch

from robust_prune.attacks import AttackSpec, adversarial_batch
from robust_prune.data import get_dataset
from robust_prune.finetune import robust_digits_model
from robust_prune.mrs import compute_mrs, prunable_groups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--groups", nargs="+", default=None, help="score only these groups, in this order (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = robust_digits_model().to(args.device)
    adv = adversarial_batch(model, get_dataset("digits", train=False), AttackSpec("pgd", 0.1, steps=10), n=256, seed=0)
    groups = prunable_groups(model, adv.x_adv[:1])
    if args.groups:
        by_name = {g.name: g for g in groups}
        unknown = [n for n in args.groups if n not in by_name]
        if unknown: raise SystemExit(f"unknown groups {unknown}; the network's: {', '.join(by_name)}")
        groups = [by_name[n] for n in args.groups]
    same = total = 0
    for seed in args.seeds:
        print(f"seed {seed}: grid and threshold as the package's defaults; one group at a time")
        print("| group | root: score (α, σ), forwards, s | ordered: score (α, σ), forwards, s | identical |\n|---|---|---|---|", flush=True)
        for g in groups:
            t = time.time()
            ra = compute_mrs(model, adv.x_adv, adv.y, groups=[g], seed=seed)
            a = ra.groups[0]
            t_root = time.time() - t
            t = time.time()
            rb = compute_mrs(model, adv.x_adv, adv.y, groups=[g], seed=seed, search="ordered")
            b = rb.groups[0]
            t_exact = time.time() - t
            ok = (a.score, a.alpha, a.sigma) == (b.score, b.alpha, b.sigma)
            same += ok
            total += 1
            print(f"| {a.name} | {a.score:.4g} ({a.alpha:.2f}, {a.sigma:.4g}), {ra.forwards:,}, {t_root:.1f} | "
                  f"{b.score:.4g} ({b.alpha:.2f}, {b.sigma:.4g}), {rb.forwards:,}, {t_exact:.1f} | "
                  f"{'yes' if ok else f'no: {100 * (a.score / b.score - 1):+.1f}%'} |", flush=True)
    print(f"\nidentical in {same} of {total} groups")


if __name__ == "__main__":
    main()
