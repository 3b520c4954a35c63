"""Run the tutorials in a fresh Jupyter kernel, as a student would.

    python tools/run_tutorials.py                 # run each tutorial, compare its key numbers with the stored ones
    python tools/run_tutorials.py --save          # run each tutorial and store the outputs (after a code change)
    python tools/run_tutorials.py 01_critical_layers --save

A tutorial's key numbers are what its prose rests on. Its hidden cell `key_numbers(...)` prints them as one JSON line,
each with the tolerance it is stated to hold to: `{"name": [value, tolerance], ...}`. A fresh run reproduces the stored
run when every number is within its tolerance of the stored one (and no number is missing or new); anything else is
drift between what the notebook says and what a student sees. `tests/test_tutorials.py` runs the check.
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
    args = ap.parse_args(argv)
    paths = [p for p in tutorials() if not args.names or p.stem in args.names or p.name in args.names or str(p.relative_to(TUTORIALS)) in args.names]
    if not paths: raise SystemExit(f"no tutorial matches {args.names}")
    bad = 0
    for path in paths:
        t0 = time.time()
        stored = key_numbers(nbformat.read(path, as_version=4))
        nb = execute(path)
        fresh = key_numbers(nb)
        if args.save:
            nbformat.write(nb, path)
            print(f"{path.name}: stored ({time.time() - t0:.0f} s): {json.dumps(fresh)}")
            continue
        lines = drift(stored, fresh)
        bad += bool(lines)
        print(f"{path.name}: {'DRIFT' if lines else 'reproduced'} ({time.time() - t0:.0f} s)" + "".join(f"\n  {l}" for l in lines))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
