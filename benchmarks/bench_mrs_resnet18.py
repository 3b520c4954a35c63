"""The full MRS metric on a trained, CIFAR-shaped ResNet-18 on the CPU, run once, with the cheap estimators beside it.

Run from the repository root:  python benchmarks/bench_mrs_resnet18.py [--threads 2] [--epochs 3]
No CIFAR file or weight can be fetched here, so the network is trained on the digits, resized to 3×32×32 (PGD-AT), and
scored on 128 PGD-10 test images: the input shape, network and batch size of the MRS issue's ResNet-18 target.
Not a test: it measures wall time and prints a Markdown table for BENCHMARKS.md.
"""
import argparse
import math
import os
import platform
import time

import torch

from bench_mrs import rho, row  # this script's folder is on sys.path when run as a script
from robust_prune.attacks import AttackSpec, adversarial_batch
from robust_prune.data import get_loaders
from robust_prune.finetune import finetune
from robust_prune.models import create_model
from robust_prune.mrs import compute_mrs, prunable_groups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--epochs", type=int, default=3, help="PGD-AT epochs of the ResNet-18")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"load average at start {os.getloadavg()[0]:.2f}\n")
    print("| what | seconds | note |\n|---|---|---|")
    t0 = time.time()
    dls = get_loaders("digits", batch_size=64, size=32, channels=3, seed=0)
    model = create_model("resnet18", dls.info, seed=1)
    hist = finetune(model, dls.train, dls.test, method="pgd-at", attack="pgd:eps=0.1,steps=2", epochs=args.epochs,
                    lr=0.05, schedule="onecycle", eval_samples=256, progress=False, seed=0)
    model.eval()
    last = hist.to_frame().iloc[-1]
    row(f"train ResNet-18 on 3×32×32 digits, PGD-AT, {args.epochs} epochs", time.time() - t0,
        f"clean {100 * last['clean_acc']:.1f}%, PGD-2 {100 * last['robust_acc']:.1f}% (256 test images)")
    adv = adversarial_batch(model, dls.test.dataset, AttackSpec("pgd", 0.1, steps=10), n=128, seed=0)
    groups = prunable_groups(model, adv.x_adv[:1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(adv.x_adv); t1 = time.time(); model(adv.x_adv)
    row(f"one plain forward, {len(adv)} images", time.time() - t1, f"{len(groups)} groups; PGD-10 accuracy {100 * adv.adv_acc:.1f}%")
    full = compute_mrs(model, adv.x_adv, adv.y, groups=groups)
    row("full MRS, bisect (11 α × 11 σ × 10 draws)", full.seconds,
        f"= {full.seconds / 3600:.2f} h; {full.forwards} perturbed forwards ({full.forwards / 10 / len(groups):.1f} "
        f"points' worth of draws per group); scores finite in {sum(math.isfinite(v) for v in full.scores.values())}/{len(groups)}")
    print("|   per group (seconds, score): " + ", ".join(f"{g.name} {g.seconds:.0f} s {g.score:.4g}" for g in full.groups) + " | | |")
    for m in ("taylor", "rewind", "noise", "worst"):
        r = compute_mrs(model, adv.x_adv, adv.y, method=m, groups=groups)
        row(f"`{m}`", r.seconds, f"Spearman with the full metric {rho(r, full):.2f}")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "state_dict changed"
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
