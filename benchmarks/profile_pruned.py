"""Where the time of a pruned network goes on the CPU: per kind of operation (convolution, batch norm, activation,
pooling, addition, the rest), the dense and the pruned network's self CPU time at one batch size, from torch.profiler.

    python benchmarks/profile_pruned.py [--threads 2] [--batch 64] [--target 0.5] [--archs resnet18 vgg16_bn]

Uniform allocation at `--target` of the prunable parameters; 3 profiled forwards after 2 warm-up ones, the two
networks profiled in turns. Prints one table per network: each kind's milliseconds per forward, its share of the dense
network's time, and its speed-up, beside the reduction of the MACs.
"""
import argparse
import copy

import torch

from robust_prune.allocation import allocate
from robust_prune.evaluation import count_macs
from robust_prune.models import create_model
from robust_prune.pruning import prune

KINDS = [("convolution", ("conv",)), ("batch norm", ("batch_norm",)), ("activation", ("relu", "clamp", "hardtanh")),
         ("pooling", ("pool",)), ("addition", ("add",)), ("linear", ("linear", "addmm", "mm"))]


def kind(name: str) -> str:
    return next((k for k, keys in KINDS if any(s in name for s in keys)), "other")


def profile(model, x, reps=3) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile as prof
    with torch.no_grad():
        for _ in range(2): model(x)
        with prof(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(reps): model(x)
    out: dict[str, float] = {}
    for e in p.key_averages():
        if e.key.startswith("aten::") and e.self_cpu_time_total > 0:
            out[kind(e.key)] = out.get(kind(e.key), 0.0) + e.self_cpu_time_total / 1000 / reps
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--archs", nargs="+", default=["resnet18", "vgg16_bn"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for arch in a.archs:
        dense = create_model(arch, "cifar10", seed=0).eval()
        pruned = copy.deepcopy(dense)
        prune(pruned, allocate(None, pruned, a.target, rule="uniform"))
        pruned.eval()
        x = torch.rand(a.batch, 3, 32, 32)
        d, p = {}, {}
        for _ in range(2):  # in turns
            for src, m in ((d, dense), (p, pruned)):
                for k, v in profile(m, x).items(): src[k] = src.get(k, 0.0) + v / 2
        total_d, total_p = sum(d.values()), sum(p.values())
        print(f"\n{arch}, {a.target:.0%} of the parameters removed (uniform), batch {a.batch}, {a.threads} threads: "
              f"MACs x{count_macs(dense) / count_macs(pruned):.2f} fewer, time x{total_d / total_p:.2f} less")
        print("| kind | dense ms | share | pruned ms | speed-up |\n|---|---|---|---|---|")
        for k in [k for k, _ in KINDS] + ["other"]:
            if k in d:
                print(f"| {k} | {d[k]:.1f} | {d[k] / total_d:.0%} | {p.get(k, 0):.1f} | x{d[k] / max(p.get(k, 1e-9), 1e-9):.2f} |")
        print(f"| all | {total_d:.1f} | 100% | {total_p:.1f} | x{total_d / total_p:.2f} |")


if __name__ == "__main__":
    main()
