"""MRS allocations against the uniform and sensitivity-blind `param` baselines on digits, at equal parameters and
at equal MACs.

Run from the repository root:
    OMP_NUM_THREADS=1 python benchmarks/bench_compare.py --threads 1 [--seeds 0 1 2 3 4] [--sparsities 0.7]
        [--targets params macs] [--rules uniform param per-param inverse] [--epochs 5]
For every seed: the demo's robust digits model (PGD-AT, trained with that seed), one fixed PGD-10 batch, one MRS report
(the default estimator); then for every budget (a share of the prunable parameters, or of the prunable MACs), and every
rule, the same dense model is pruned (L2 criterion) to that budget, fine-tuned with TRADES and evaluated on the whole
test split: clean, PGD-20 and APGD-CE+APGD-T (the first two AutoAttack stages, labelled as such) at eps 0.1.
Prints a Markdown table: mean with a 95% t-interval over seeds, params and MACs relative to the uniform row, and a
paired t-test of each rule against `uniform` and `param` (same seed, same dense network). Every finished run is
written at once to benchmarks/results/compare.json (atomically), so a stopped benchmark keeps what it measured.

    --append: keep the runs already in --out and add the missing ones (a budget, target or rule run later);
    --scores-from FILE: each seed's MRS scores from the dense row of an earlier run (the same dense network, checked
    by its evaluation) instead of computing a new report, so the added runs use the scores the earlier ones used;
    --mrs-settings JSON: compute_mrs settings for the reports computed here (e.g. an earlier default).
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from scipy import stats

from robust_prune.allocation import CostModel
from robust_prune.attacks import adversarial_batch
from robust_prune.evaluation import evaluate
from robust_prune.mrs import compute_mrs
from robust_prune.pipeline import MRPFConfig, allocation_for, load_data, load_model, prune_and_finetune

RULES = ("uniform", "param", "per-param", "inverse", "rank", "softmax")


def ci95(vals):
    "Mean and half-width of the 95% t-interval."
    m = statistics.mean(vals)
    if len(vals) < 2: return m, float("nan")
    return m, stats.t.ppf(0.975, len(vals) - 1) * statistics.stdev(vals) / len(vals) ** 0.5


def paired(a, b):
    "Mean difference a - b (points) and the two-sided p-value of a paired t-test."
    d = [x - y for x, y in zip(a, b)]
    if len(d) < 2 or statistics.pstdev(d) == 0: return 100 * statistics.mean(d), float("nan")
    return 100 * statistics.mean(d), stats.ttest_rel(a, b).pvalue


def table(runs, seeds, targets, sparsities, rules) -> str:
    lines = ["| matched on | removed | rule | params (× uniform) | MACs (× uniform) | clean % | PGD-20 % | APGD-CE+T % "
             "| Δ APGD vs uniform (p) | Δ APGD vs param (p) |", "|---" * 10 + "|"]
    dense = sorted((r for r in runs if r["rule"] == "dense"), key=lambda r: r["seed"])
    if dense:
        f = lambda k: "{:.1f} ± {:.1f}".format(*(100 * v for v in ci95([r[k] for r in dense])))
        lines.append(f"| — | 0 | dense | {dense[0]['params']:,} | {dense[0]['macs']:,} | {f('clean')} | {f('pgd')} | {f('apgd')} | | |")
    for target in targets:
        for sparsity in sparsities:
            sel = lambda rule: sorted((r for r in runs if (r["target"], r["sparsity"], r["rule"]) == (target, sparsity, rule)),
                                      key=lambda r: r["seed"])
            uni, par = sel("uniform"), sel("param")
            for rule in rules:
                rs = sel(rule)
                if not rs: continue
                f = lambda k: "{:.1f} ± {:.1f}".format(*(100 * v for v in ci95([r[k] for r in rs])))
                rel = lambda k: (f"{statistics.mean(r[k] for r in rs):,.0f} ({statistics.mean(r[k] / u[k] for r, u in zip(rs, uni)):.2f})"
                                 if len(uni) == len(rs) else f"{statistics.mean(r[k] for r in rs):,.0f}")
                def vs(base):
                    if not base or rule == base[0]["rule"]: return ""
                    if [r["seed"] for r in base] != [r["seed"] for r in rs]: return "n/a"
                    d, p = paired([r["apgd"] for r in rs], [r["apgd"] for r in base])
                    return f"{d:+.1f} ({p:.2f})"
                lines.append(f"| {target} | {sparsity:.0%} | {rule} | {rel('params')} | {rel('macs')} | {f('clean')} | {f('pgd')} "
                             f"| {f('apgd')} | {vs(uni)} | {vs(par)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.7])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--targets", nargs="+", default=["params", "macs"], choices=["params", "macs"])
    ap.add_argument("--rules", nargs="+", default=["uniform", "param", "per-param", "inverse"], choices=RULES)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--method", default="trades")
    ap.add_argument("--mrs-method", default="mrs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/compare.json")
    ap.add_argument("--table-only", action="store_true", help="print the table of the runs already in --out")
    ap.add_argument("--append", action="store_true", help="keep the runs in --out; run only the missing ones")
    ap.add_argument("--scores-from", default=None, help="a results file whose dense rows give each seed's MRS scores")
    ap.add_argument("--mrs-settings", type=json.loads, default={}, help='compute_mrs settings as JSON, e.g. \'{"draws": 20, "refine": 1}\'')
    args = ap.parse_args()
    out = Path(args.out)
    if args.table_only:
        d = json.loads(out.read_text())
        print(table(d["runs"], args.seeds, args.targets, args.sparsities, args.rules))
        return
    torch.set_num_threads(args.threads)
    t_start = time.time()
    runs, mrs_seconds, calls, kept = [], [], [], {}
    if args.append and out.is_file():
        earlier = json.loads(out.read_text())
        runs, mrs_seconds = earlier["runs"], earlier["mrs_seconds"]
        calls = earlier.get("earlier_args", []) + [earlier["args"]]
        kept = {k: v for k, v in earlier.items() if k not in ("args", "earlier_args", "mrs_seconds", "runs")}  # notes
    done = {(r["seed"], r["target"], r["sparsity"], r["rule"]) for r in runs}
    given = ({r["seed"]: r for r in json.loads(Path(args.scores_from).read_text())["runs"] if r["rule"] == "dense"}
             if args.scores_from else {})

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(args=vars(args), earlier_args=calls, mrs_seconds=mrs_seconds, runs=runs, **kept), indent=1))
        os.replace(tmp, out)

    for seed in args.seeds:
        base = MRPFConfig(seed=seed, epochs=args.epochs, method=args.method, mrs_method=args.mrs_method, progress=False)
        model = load_model(base)
        dls = load_data(base, model.arch_config["input_shape"])
        mrs_attack, _, ev = base.attacks()
        PGD, APGD = (a.label for a in ev)  # PGD-20 and APGD-CE+APGD-T at the data set's eps
        dense = evaluate(model, dls.test, ev, name="dense", progress=False, latency=False)
        batch = adversarial_batch(model, dls.test.dataset, mrs_attack, n=base.mrs_samples, seed=seed)
        if seed in given:  # the scores an earlier run computed for this very network
            then = given[seed]
            now = dict(params=dense.params, macs=dense.macs, clean=dense.clean_acc, pgd=dense.robust_acc[PGD], apgd=dense.robust_acc[APGD])
            if any(now[k] != then[k] for k in now):
                raise SystemExit(f"seed {seed}: the dense network is not the one {args.scores_from} scored: {now} there {then}")
            report, seconds = then["scores"], 0.0
        else:
            report = compute_mrs(model, batch.x_adv, batch.y, method=args.mrs_method, seed=seed, **args.mrs_settings)
            seconds = report.seconds
            mrs_seconds.append(seconds)
        print(f"seed {seed}: dense clean {dense.clean_acc:.4f}, PGD-20 {dense.robust_acc[PGD]:.4f}, "
              f"APGD-CE+T {dense.robust_acc[APGD]:.4f}, MRS {seconds:.0f} s", flush=True)
        if (seed, None, 0.0, "dense") not in done:
            runs.append(dict(seed=seed, target=None, sparsity=0.0, rule="dense", params=dense.params, macs=dense.macs,
                             clean=dense.clean_acc, pgd=dense.robust_acc[PGD], apgd=dense.robust_acc[APGD],
                             scores=report if isinstance(report, dict) else {g.name: g.score for g in report.groups}))
        cm = CostModel(model)
        for target in args.targets:
            for sparsity in args.sparsities:
                cfg = MRPFConfig(**{**base.to_dict(), "sparsity": sparsity, "target_of": target})
                for rule in args.rules:
                    if (seed, target, sparsity, rule) in done: continue
                    t0 = time.time()
                    alloc = allocation_for(rule, cfg, model, report, cm)
                    pruned, prep, hist = prune_and_finetune(model, alloc, cfg, dls, batch)
                    rep = evaluate(pruned, dls.test, ev, name=rule, progress=False, latency=False)
                    row = dict(seed=seed, target=target, sparsity=sparsity, rule=rule, params=rep.params, macs=rep.macs,
                               removed=alloc.achieved, clean=rep.clean_acc, pgd=rep.robust_acc[PGD], apgd=rep.robust_acc[APGD],
                               seconds=time.time() - t0, ratios={k: round(v, 4) for k, v in alloc.ratios.items()})
                    runs.append(row)
                    save()
                    print(f"  {target:6s} {sparsity:.0%} {rule:10s} params {rep.params:7d} MACs {rep.macs:9d} "
                          f"clean {rep.clean_acc:.4f} PGD-20 {row['pgd']:.4f} APGD {row['apgd']:.4f} ({row['seconds']:.0f} s)", flush=True)
    save()
    print(f"\n{args.method} x {args.epochs} epochs, MRS method `{args.mrs_method}` "
          f"({statistics.mean(mrs_seconds) if mrs_seconds else float('nan'):.0f} s per report), seeds {args.seeds}, "
          f"total {time.time() - t_start:.0f} s, load average {os.getloadavg()[0]:.2f}\n")
    print(table(runs, args.seeds, args.targets, args.sparsities, args.rules))


if __name__ == "__main__":
    main()
