"""Does a pruned network get as much faster as it gets cheaper? Speed-up ÷ MACs reduction of pruned CIFAR ResNet-18
and VGG-16-BN on the CPU, uniform allocation at 50% and 75% of the prunable parameters, with and without channel
rounding (`round_to=8`) and in both memory formats, at batch 1 and 64.

    python benchmarks/bench_pruned_latency.py [--threads 2] [--rounds 7] [--archs resnet18 vgg16_bn]

For one network, batch size and memory format, the dense model and every pruned variant are timed in turns
(`measure_latencies`: each round times every model once), so machine load falls on all of them alike. A ratio of 1
means the wall time fell exactly as the multiply-accumulates did. Prints one table.
"""
import argparse
import copy
import time

import torch

from robust_prune.allocation import allocate
from robust_prune.evaluation import count_macs, measure_latencies
from robust_prune.models import create_model
from robust_prune.pruning import prune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--archs", nargs="+", default=["resnet18", "vgg16_bn"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} threads, {a.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M')}")
    print("| network | batch | layout | variant | MACs | latency ms (IQR) | speed-up | MACs reduction | speed-up ÷ MACs reduction |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arch in a.archs:
        dense = create_model(arch, "cifar10", seed=0).eval()
        models = {"dense": dense}
        for target in (0.5, 0.75):
            for rt in (None, 8):
                m = copy.deepcopy(dense)
                prune(m, allocate(None, m, target, rule="uniform", round_to=rt), round_to=rt)
                models[f"{target:.0%}{'' if rt is None else ', round_to 8'}"] = m.eval()
        macs = {k: count_macs(m) for k, m in models.items()}
        for layout in ("contiguous", "channels-last"):
            fmt = torch.channels_last if layout == "channels-last" else torch.contiguous_format
            for m in models.values(): m.to(memory_format=fmt)
            for batch in a.batches:
                lat = measure_latencies(models, batch_size=batch, rounds=a.rounds, warmup=2)
                base = lat["dense"][0]
                for k, (med, iqr) in lat.items():
                    speed, red = base / med, macs["dense"] / macs[k]
                    print(f"| {arch} | {batch} | {layout} | {k} | {macs[k] / 1e6:.1f} M | {med:.2f} ({iqr:.2f}) | x{speed:.2f} | "
                          f"x{red:.2f} | {'—' if k == 'dense' else f'{speed / red:.2f}'} |", flush=True)


if __name__ == "__main__":
    main()
