"""Our AutoAttack (torchattacks components, `build_attack("autoattack")`) against the reference implementation (issue 12).

Run from the repository root:  python benchmarks/bench_autoattack.py [--eps 0.1 0.2] [--threads 1] [--out ...]
Needs the development dependencies (`pip install -e ".[dev]"`: the reference is the `pyautoattack` package).
On the demo's robust digits network and the whole digits test split (450 images), for every L∞ budget: the accuracy
after each stage of our AutoAttack (APGD-CE, APGD-T, FAB-T, Square, each on the images every earlier stage failed on),
the reference's standard version with the same seed and with another seed (how much a seed alone moves images),
torchattacks' own `AutoAttack(version="standard")`, the APGD-CE+APGD-T subset and PGD-20, with wall times. Prints a
Markdown table and writes every number to benchmarks/results/autoattack.json.
"""
import argparse
import json
import logging
import time
from pathlib import Path

import torch
import torchattacks

from robust_prune.attacks import AttackSpec, build_attack, perturb, restore_modes
from robust_prune.data import get_loaders
from robust_prune.finetune import robust_digits_model


def robust_flags(model, x_adv, y) -> torch.Tensor:
    "Which images the model still classifies correctly."
    with torch.no_grad(): return model(x_adv).argmax(1) == y


def ours_by_stage(model, x, y, eps: float, seed: int) -> tuple[torch.Tensor, dict, float]:
    "Run the stages of `build_attack('autoattack')` one after another, recording the accuracy after each."
    t0 = time.time()
    stages = build_attack(AttackSpec("autoattack", eps), model, seed=seed).attacks
    robust = robust_flags(model, x, y)
    after = {"clean": robust.float().mean().item()}
    with restore_modes(model):
        for name, atk in zip(("APGD-CE", "APGD-T", "FAB-T", "Square"), stages):
            idx = robust.nonzero().squeeze(1)
            if len(idx):
                robust[idx[~robust_flags(model, atk(x[idx], y[idx]), y[idx])]] = False
            after[name] = robust.float().mean().item()
    return robust, after, time.time() - t0


def reference(model, x, y, eps: float, seed: int) -> tuple[torch.Tensor, float]:
    import pyautoattack
    t0 = time.time()
    aa = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device="cpu")
    x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(y))
    return robust_flags(model, x_adv, y), time.time() - t0


def timed(fn):
    t0 = time.time()
    out = fn()
    return out, time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--other-seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/autoattack.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    model = robust_digits_model().eval()
    xs, ys = zip(*get_loaders("digits", batch_size=512).test)
    x, y = torch.cat(xs), torch.cat(ys)
    n = len(y)
    rows = []
    for eps in args.eps:
        ours, stages, t_ours = ours_by_stage(model, x, y, eps, args.seed)
        ref, t_ref = reference(model, x, y, eps, args.seed)
        ref_other, _ = reference(model, x, y, eps, args.other_seed)
        ta_default, t_ta = timed(lambda: robust_flags(model, torchattacks.AutoAttack(
            model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=args.seed)(x, y), y))
        subset, t_subset = timed(lambda: robust_flags(model, perturb(model, x, y, AttackSpec("apgd-ce+apgd-t", eps), seed=args.seed), y))
        pgd, t_pgd = timed(lambda: robust_flags(model, perturb(model, x, y, AttackSpec("pgd", eps, steps=20), seed=args.seed), y))
        row = dict(eps=eps, n=n, ours=ours.sum().item(), reference=ref.sum().item(),
                   reference_other_seed=ref_other.sum().item(), torchattacks_default=ta_default.sum().item(),
                   apgd_ce_apgd_t=subset.sum().item(), pgd20=pgd.sum().item(), ours_stages=stages,
                   ours_robust_ref_broken=(ours & ~ref).sum().item(), ref_robust_ours_broken=(ref & ~ours).sum().item(),
                   ref_seed_disagreements=(ref != ref_other).sum().item(),
                   seconds=dict(ours=t_ours, reference=t_ref, torchattacks_default=t_ta, apgd_ce_apgd_t=t_subset, pgd20=t_pgd))
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(threads=args.threads, seed=args.seed, rows=rows), indent=1))
    pct = lambda k, r: f"{100 * r[k] / r['n']:.2f}%"
    print("\n| eps (L∞) | PGD-20 | APGD-CE+APGD-T | torchattacks `AutoAttack` | AutoAttack (ours) | AutoAttack (reference) "
          "| reference, other seed | images ours robust / reference broken | the reverse |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['eps']:g} | {pct('pgd20', r)} | {pct('apgd_ce_apgd_t', r)} | {pct('torchattacks_default', r)} | "
              f"**{pct('ours', r)}** | **{pct('reference', r)}** | {pct('reference_other_seed', r)} | "
              f"{r['ours_robust_ref_broken']} | {r['ref_robust_ours_broken']} |")
    print("\n| eps | after APGD-CE | after APGD-T | after FAB-T | after Square | time ours | time reference | time APGD-CE+APGD-T |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        s, t = r["ours_stages"], r["seconds"]
        print(f"| {r['eps']:g} | " + " | ".join(f"{100 * s[k]:.2f}%" for k in ("APGD-CE", "APGD-T", "FAB-T", "Square"))
              + f" | {t['ours']:.0f} s | {t['reference']:.0f} s | {t['apgd_ce_apgd_t']:.0f} s |")


if __name__ == "__main__":
    main()
