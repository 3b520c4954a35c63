"""MRS allocation against the uniform and sensitivity-blind `param` baselines on digits (issue 4).

Run from the repository root:  python benchmarks/bench_compare.py [--sparsities 0.5 0.7 0.9] [--seeds 0 1 2] [--epochs 5]
For every seed: the demo's robust digits model (PGD-AT, trained with that seed), one fixed PGD-10 batch, one MRS report;
then for every sparsity and allocation rule the same dense model is pruned (L2 criterion) to the same parameter budget,
fine-tuned with TRADES and evaluated (clean, PGD-20 at eps 0.1) on the whole test split. Prints a Markdown table of
mean ± std over seeds, and writes every run to benchmarks/results/compare.json.
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from robust_prune.allocation import CostModel
from robust_prune.attacks import adversarial_batch
from robust_prune.evaluation import evaluate
from robust_prune.mrs import compute_mrs
from robust_prune.pipeline import MRPFConfig, allocation_for, load_data, load_model, prune_and_finetune

RULES = ("uniform", "param", "per-param", "inverse", "rank", "softmax")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rules", nargs="+", default=list(RULES))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--method", default="trades")
    ap.add_argument("--mrs-method", default="mrs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/compare.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    runs = []
    for seed in args.seeds:
        base = MRPFConfig(seed=seed, epochs=args.epochs, method=args.method, mrs_method=args.mrs_method, progress=False)
        model = load_model(base)
        dls = load_data(base, model.arch_config["input_shape"])
        mrs_attack, _, ev = base.attacks()
        dense = evaluate(model, dls.test, ev, name="dense", progress=False, latency=False)
        batch = adversarial_batch(model, dls.test.dataset, mrs_attack, n=base.mrs_samples, seed=seed)
        report = compute_mrs(model, batch.x_adv, batch.y, method=args.mrs_method, seed=seed)
        print(f"seed {seed}: dense clean {dense.clean_acc:.4f}, PGD-20 {dense.robust_acc['PGD-20 (Linf, 0.1)']:.4f}, "
              f"MRS {report.seconds:.0f} s", flush=True)
        runs.append(dict(seed=seed, sparsity=0.0, rule="dense", params=dense.params, clean=dense.clean_acc,
                         pgd=dense.robust_acc["PGD-20 (Linf, 0.1)"]))
        cm = CostModel(model)
        for sparsity in args.sparsities:
            cfg = MRPFConfig(**{**base.to_dict(), "sparsity": sparsity})
            for rule in args.rules:
                t0 = time.time()
                alloc = allocation_for(rule, cfg, model, report, cm)
                pruned, prep, hist = prune_and_finetune(model, alloc, cfg, dls, batch)
                rep = evaluate(pruned, dls.test, ev, name=rule, progress=False, latency=False)
                row = dict(seed=seed, sparsity=sparsity, rule=rule, params=rep.params, macs=rep.macs,
                           prunable_removed=alloc.achieved, clean=rep.clean_acc, pgd=rep.robust_acc["PGD-20 (Linf, 0.1)"],
                           fgsm=rep.robust_acc["FGSM (Linf, 0.1)"], seconds=time.time() - t0,
                           ratios={k: round(v, 4) for k, v in alloc.ratios.items()})
                runs.append(row)
                print(f"  {sparsity:.0%} {rule:10s} params {rep.params:7d} clean {rep.clean_acc:.4f} PGD-20 {row['pgd']:.4f} "
                      f"({row['seconds']:.0f} s)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(args=vars(args), runs=runs), indent=1))

    def ms(vals):
        m = statistics.mean(vals)
        s = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{100 * m:.1f} ± {100 * s:.1f}"

    print(f"\n{args.method} x {args.epochs} epochs, MRS method `{args.mrs_method}`, seeds {args.seeds}, "
          f"total {time.time() - t_start:.0f} s, load average {os.getloadavg()[0]:.2f}\n")
    print("| removed (prunable params) | rule | params | clean % | PGD-20 % |\n|---|---|---|---|---|")
    d = [r for r in runs if r["rule"] == "dense"]
    print(f"| 0 (dense) | — | {d[0]['params']:,} | {ms([r['clean'] for r in d])} | {ms([r['pgd'] for r in d])} |")
    for sparsity in args.sparsities:
        for rule in args.rules:
            rs = [r for r in runs if r["sparsity"] == sparsity and r["rule"] == rule]
            print(f"| {sparsity:.0%} | {rule} | {statistics.mean(r['params'] for r in rs):,.0f} | "
                  f"{ms([r['clean'] for r in rs])} | {ms([r['pgd'] for r in rs])} |")


if __name__ == "__main__":
    main()
