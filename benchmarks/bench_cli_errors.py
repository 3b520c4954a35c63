"""Time from starting `robust-prune` to its first error line, cold (a new process each time), for argument errors of
every kind, measured in turns beside `python -c "import torch"` so that machine load falls on all of them alike.

    python benchmarks/bench_cli_errors.py --rounds 7

Prints one row per command: the median and the spread (min-max) of the wall time over the rounds, and the ratio to
importing torch. The target (issue: reliability) is under 2 s on a 2-core machine for `--help` and every argument error.
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import time

EXE = shutil.which("robust-prune") or sys.exit("install the package first: pip install -e .")
COMMANDS = {
    "import torch (reference)": [sys.executable, "-c", "import torch"],
    "robust-prune --help": [EXE, "--help"],
    "run --sparsity 1.5": [EXE, "run", "--sparsity", "1.5"],
    "run --lr -1": [EXE, "run", "--lr", "-1"],
    "run --rule magic": [EXE, "run", "--rule", "magic"],
    "run --compare uniform,nope": [EXE, "run", "--compare", "uniform,nope"],
    "run --config bad.yaml (batch_size: big)": [EXE, "run", "--config", "BAD"],
    "mrs --json . (a folder)": [EXE, "mrs", "--json", "."],
    "train --epochs 0": [EXE, "train", "--epochs", "0"],
    "evaluate --max-samples 0": [EXE, "evaluate", "--max-samples", "0"],
    "run --arch alexnet": [EXE, "run", "--arch", "alexnet"],
    "run --eval-attack foo": [EXE, "run", "--eval-attack", "foo"],
    "train --attack pgd:eps=9": [EXE, "train", "--attack", "pgd:eps=9"],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    import tempfile
    bad = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    bad.write("batch_size: big\n"); bad.close()
    times = {k: [] for k in COMMANDS}
    for r in range(args.rounds):
        names = list(COMMANDS)
        names = names[r % len(names):] + names[:r % len(names)]  # rotate the order every round
        for name in names:
            cmd = [bad.name if c == "BAD" else c for c in COMMANDS[name]]
            t = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True)
            times[name].append(time.perf_counter() - t)
            if name.startswith(("import", "robust-prune --help")): assert out.returncode == 0, out.stderr
            else: assert out.returncode == 2 and "error" in out.stderr, (name, out.stderr[-500:])
    ref = statistics.median(times["import torch (reference)"])
    print(f"{'command':50s} {'median s':>9s} {'min-max s':>12s} {'/ import torch':>15s}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:50s} {m:9.2f} {min(ts):5.2f}-{max(ts):<6.2f} {m / ref:15.2f}")


if __name__ == "__main__":
    main()
