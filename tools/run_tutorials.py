"""Run the tutorials in a fresh Jupyter kernel, as a student would.

    python tools/run_tutorials.py                 # run each tutorial, compare its key numbers with the stored ones
    python tools/run_tutorials.py --save          # run each tutorial and store the outputs (after a code change)
    python tools/run_tutorials.py 01_critical_layers --save

    python tools/run_tutorials.py --save-reference   # record this machine's own key numbers (see below)

A tutorial's key numbers are what its prose rests on. Its hidden cell `key_numbers(...)` prints them as one JSON line,
each with the tolerance it is stated to hold to: `{"name": [value, tolerance], ...}`. A fresh run reproduces the stored
run when every number is within its tolerance of the stored one (and no number is missing or new); anything else is
drift between what the notebook says and what a student sees. `tests/test_tutorials.py` runs the check.

CPUs round differently: oneDNN picks its kernels by instruction set (AVX2, AVX-512, ...), and adversarial training
turns the last bit of a gradient into a different sign of a PGD step, so a few epochs on another kind of CPU can end
several points away (measured: a torchvision ResNet-18's clean accuracy after one epoch of PGD-AT, 0.39 on the machine
that stored the outputs, 0.56 on an AMD EPYC with AVX2). The tutorials' hidden checks (the claims the prose makes) hold on
both; the numbers do not. So a machine whose kernels round otherwise can have its own reference: `--save-reference`
writes this machine's key numbers to `key_numbers.json`, under its `numerics_id()` (the bits of a few fixed convolution
and matrix products), and a fresh run there is compared with those; every other machine is compared with the
notebook's stored outputs.
"""
import argparse
import json
import sys
import time
import uuid
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "nbs" / "tutorials"
MARK = "key numbers: "
REFERENCES = TUTORIALS / "key_numbers.json"  # {numerics id: {tutorial: key numbers}}: machines that round otherwise


def numerics_id(threads: int = 2) -> str:
    "How this machine's CPU kernels round, as a short id: its instruction set and a hash of a few fixed convolution and matrix products (at the tutorials' 2 threads)."
    import hashlib
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        x, w = torch.randn(8, 16, 12, 12, generator=g), torch.randn(32, 16, 3, 3, generator=g).requires_grad_()
        y = torch.nn.functional.conv2d(x, w, padding=1)
        y.square().sum().backward()
        m = torch.randn(64, 300, generator=g) @ torch.randn(300, 64, generator=g)
        h = hashlib.sha256()
        for t in (y, w.grad, m): h.update(t.detach().contiguous().numpy().tobytes())
    finally: torch.set_num_threads(before)
    return f"{torch.backends.cpu.get_cpu_capability()}-{h.hexdigest()[:12]}"


def _name(path: Path) -> str: return str(path.relative_to(TUTORIALS))


def _references() -> dict:
    return json.loads(REFERENCES.read_text()) if REFERENCES.is_file() else {}


def reference(path: Path) -> tuple[dict, str]:
    "The key numbers a fresh run of `path` on this machine must reproduce, and where they come from."
    own = _references().get(numerics_id(), {}).get(_name(path))
    if own is not None: return own, f"{REFERENCES.name} ({numerics_id()})"
    return key_numbers(nbformat.read(path, as_version=4)), "the notebook's stored outputs"


def _write_reference(path: Path, numbers: dict | None) -> None:
    "Record (or, with None, forget) this machine's own key numbers of `path`."
    refs = _references()
    mine = refs.setdefault(numerics_id(), {})
    if numbers is None: mine.pop(_name(path), None)
    else: mine[_name(path)] = numbers
    refs = {k: v for k, v in refs.items() if v}
    REFERENCES.write_text(json.dumps(refs, indent=1, sort_keys=True) + "\n")


def tutorials() -> list[Path]:
    "The workshop notebooks, then the paper's findings (`paper/`)."
    return sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb")) + sorted(TUTORIALS.glob("paper/[0-9][0-9]_*.ipynb"))


def execute(path: Path, timeout: int = 1200) -> nbformat.NotebookNode:
    "Run every cell of `path` in a new python3 kernel started in the notebook's folder; returns the executed notebook."
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells: cell.setdefault("id", uuid.uuid4().hex[:8])  # nbformat 4.5 wants an id on every cell
    # widget state is not stored: a FigureWidget's state carries plotly.js (5 MB); the figures are stored as images instead
    NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def key_numbers(nb) -> dict:
    "The {name: [value, tolerance]} that the notebook's key-numbers cell printed (empty when it has none)."
    found = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            for line in out.get("text", "").splitlines() if out.get("output_type") == "stream" else []:
                if line.startswith(MARK): found.update(json.loads(line[len(MARK):]))
    return found


def drift(stored: dict, fresh: dict) -> list[str]:
    "What differs beyond the stated tolerance, one line each (empty: the fresh run reproduces the stored one)."
    if not stored: return ["the stored notebook prints no key numbers"]
    lines = [f"{k}: stored, missing from the fresh run" for k in stored if k not in fresh]
    lines += [f"{k}: new in the fresh run (not stored)" for k in fresh if k not in stored]
    for k in stored.keys() & fresh.keys():
        (a, tol), (b, _) = stored[k], fresh[k]
        if not abs(a - b) <= tol: lines.append(f"{k}: stored {a:.4g}, fresh {b:.4g} (tolerance {tol:g})")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="tutorial names (default: all)")
    ap.add_argument("--save", action="store_true", help="store the fresh outputs in the notebooks")
    ap.add_argument("--save-reference", action="store_true", help="record this machine's key numbers in key_numbers.json")
    args = ap.parse_args(argv)
    paths = [p for p in tutorials() if not args.names or p.stem in args.names or p.name in args.names or str(p.relative_to(TUTORIALS)) in args.names]
    if not paths: raise SystemExit(f"no tutorial matches {args.names}")
    bad = 0
    for path in paths:
        t0 = time.time()
        stored, where = reference(path)
        nb = execute(path)
        fresh = key_numbers(nb)
        if args.save or args.save_reference:
            if args.save: nbformat.write(nb, path)
            _write_reference(path, fresh if args.save_reference else None)  # stored outputs are this machine's reference
            print(f"{path.name}: {'stored' if args.save else 'reference recorded'} ({time.time() - t0:.0f} s): {json.dumps(fresh)}")
            continue
        lines = drift(stored, fresh)
        bad += bool(lines)
        print(f"{path.name}: {'DRIFT' if lines else 'reproduced'} from {where} ({time.time() - t0:.0f} s)" + "".join(f"\n  {l}" for l in lines))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
