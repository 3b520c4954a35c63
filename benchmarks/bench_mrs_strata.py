"""Would stratifying the noise along a group's leading Hessian directions steady the full metric's estimate?

Run from the repository root:  python benchmarks/bench_mrs_strata.py [--top 8] [--repeats 12] [--threads 2]
On the demo's robust digits network and its fixed PGD-10 batch, every group is first scored with the defaults, which
gives its boundary point (α, σ). There, E_u[L_adv] is estimated with 320 antithetic draws (16 slices) in two ways,
`--repeats` times each with fresh draws: plain standard-normal draws, and the same draws with their coordinates along
the `--top` leading eigenvectors of the group's Hessian (in the noise's own scaled coordinates; subspace iteration with
Hessian-vector products) replaced by a Latin hypercube of standard-normal values, over all draws and within each
slice. Each draw stays standard normal, so every scheme is unbiased; printed per group: the leading eigenvalues, and
each scheme's standard deviation relative to the loss rise it estimates, and the variance ratio plain ÷ stratified.
Not a test, and not used by the package: the experiment behind a note in BENCHMARKS.md.
"""
import argparse
import statistics
import sys
from pathlib import Path

import torch
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mrs_seeds import network  # noqa: E402

from robust_prune.mrs import _theta0, compute_mrs, prunable_groups  # noqa: E402
from robust_prune.partial import LossEvaluator  # noqa: E402

SLICES, PAIRS = 16, 160


def lhs(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    "An n × k Latin hypercube of standard-normal values."
    u = (torch.stack([torch.randperm(n, generator=gen) for _ in range(k)], 1).double()
         + torch.rand(n, k, generator=gen, dtype=torch.float64)) / n
    return torch.tensor(norm.ppf(u.numpy()), dtype=torch.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, adv = network("digits", "cpu", 3)
    x, y = adv.x_adv, adv.y
    rep = compute_mrs(model, x, y, seed=0)
    groups = prunable_groups(model, x[:1])
    P = {k: p.detach() for k, p in model.named_parameters()}
    th0 = _theta0(model, None, 0, groups, P)
    ev = LossEvaluator(model.eval(), x, y, slices=SLICES)
    with torch.no_grad(): base = float(ev.loss())
    print(f"base loss {base:.4f}; {PAIRS} antithetic pairs per estimate, {args.repeats} repeats, top {args.top} directions\n")
    print("| group | params | α, σ | leading eigenvalues | plain: sd / rise | strata over all draws | strata per slice | variance ratios |")
    print("|---|---|---|---|---|---|---|---|")
    for g in groups:
        a, s = rep[g.name].alpha, rep[g.name].sigma
        if a is None: continue
        names = list(g.tensors)
        shapes = {n: P[n].shape for n in names}
        sizes = [P[n].numel() for n in names]
        ctr = {n: (1 - a) * th0[n] + a * P[n] for n in names}
        rms = {n: P[n].pow(2).mean().sqrt() for n in names}  # the noise scale of each tensor, as the package uses it
        D = torch.cat([rms[n].expand(P[n].numel()) for n in names])
        ev.focus(names)

        def hvp(V: torch.Tensor) -> torch.Tensor:  # D H D V, columns of V in the noise's scaled coordinates
            cols = []
            for j in range(V.shape[1]):
                leaves = {n: ctr[n].clone().requires_grad_(True) for n in names}
                with torch.enable_grad():
                    grads = torch.autograd.grad(ev.loss(leaves), list(leaves.values()), create_graph=True)
                    v = (D * V[:, j]).split(sizes)
                    hv = torch.autograd.grad(sum((gi * vi.view_as(gi)).sum() for gi, vi in zip(grads, v)), list(leaves.values()))
                cols.append(D * torch.cat([h.reshape(-1) for h in hv]))
            return torch.stack(cols, 1)

        gen = torch.Generator().manual_seed(0)
        V = torch.linalg.qr(torch.randn(sum(sizes), args.top, generator=gen))[0]
        for _ in range(6): V = torch.linalg.qr(hvp(V))[0]
        T = V.T @ hvp(V)
        lam, U = torch.linalg.eigh((T + T.T) / 2)
        order = lam.abs().argsort(descending=True)
        lam, V = lam[order], (V @ U)[:, order]

        def estimate(scheme: str, r: int) -> float:
            gen = torch.Generator().manual_seed(1000 + r)
            Z = torch.randn(PAIRS, sum(sizes), generator=gen)
            if scheme == "all": C = lhs(PAIRS, args.top, gen)
            elif scheme == "slice":
                C = torch.empty(PAIRS, args.top)
                for sl in range(SLICES): C[sl::SLICES] = lhs(PAIRS // SLICES, args.top, gen)  # pair c is on slice c % 16
            if scheme != "plain": Z = Z - (Z @ V) @ V.T + C @ V.T
            Z = torch.cat([Z, -Z])
            stacked = {n: ctr[n].unsqueeze(0) + s * rms[n] * c.view(-1, *shapes[n]) for n, c in zip(names, Z.split(sizes, 1))}
            with torch.no_grad(): return float(ev.losses(stacked, 0).mean())

        out = {k: [estimate(k, r) for r in range(args.repeats)] for k in ("plain", "all", "slice")}
        rise = statistics.mean(out["plain"]) - base
        sd = {k: statistics.stdev(v) for k, v in out.items()}
        print(f"| {g.name} | {sum(sizes):,} | {a:.2f}, {s:.4g} | {', '.join(f'{float(e):.3g}' for e in lam[:4])} | "
              f"{sd['plain'] / rise:.3f} | {sd['all'] / rise:.3f} | {sd['slice'] / rise:.3f} | "
              f"{(sd['plain'] / sd['all']) ** 2:.1f}, {(sd['plain'] / sd['slice']) ** 2:.1f} |", flush=True)


if __name__ == "__main__":
    main()
