"""Re-run notebooks in a fresh kernel and store their outputs, keeping what a reader without a kernel can see.

    python tools/store_outputs.py nbs/index.ipynb nbs/08_widgets.ipynb

Kept: printed text, errors, `text/plain`, `text/markdown`, images, plotly figures (JSON) and HTML under 200 kB (tables).
Dropped: widget views (a stored notebook cannot show a live widget; its `text/plain` stays) and bigger HTML (a
figure's inlined plotly.js). Widget state is never stored. Run `nbdev_clean` afterwards (and `python tools/make_readme.py`
for the index), as for any notebook edit. The tutorials have their own command with a reproduction check:
`tools/run_tutorials.py --save`.

    python tools/store_outputs.py --images-only nbs/07_evaluation.ipynb

adds to every stored plotly figure that lacks one the PNG that `robust_prune.widgets.use_static_images()` would have
stored with it (same size and scale), drawn from the stored figure itself, without running the notebook: for outputs
that are current, in a notebook that has just been given its `use_static_images()` cell.
"""
import json
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_tutorials import execute  # noqa: E402

KEEP = ("text/plain", "text/markdown", "image/png", "image/svg+xml", "image/jpeg", "application/vnd.plotly.v1+json", "text/html")
MAX_HTML = 200_000


def readable(out: dict) -> dict | None:
    "The output with only what shows without a kernel, or None when nothing is left."
    if out.get("output_type") not in ("execute_result", "display_data"): return out
    data = {k: v for k, v in out.get("data", {}).items() if k in KEEP and not (k == "text/html" and len(str(v)) > MAX_HTML)}
    if not data: return None
    out["data"] = data
    out.get("metadata", {}).pop("application/vnd.jupyter.widget-view+json", None)
    return out


def store(path: Path) -> int:
    "Execute `path` and write it back with readable outputs only; returns the number of outputs dropped whole."
    nb = execute(path)
    dropped = 0
    for cell in nb.cells:
        if cell.cell_type != "code": continue
        kept = [o for o in (readable(o) for o in cell.get("outputs", [])) if o is not None]
        dropped += len(cell.get("outputs", [])) - len(kept)
        cell["outputs"] = kept
    nbformat.write(nb, path)
    return dropped


def add_images(path: Path) -> int:
    "Add the PNG of every stored plotly figure of `path` that has none; returns how many were added."
    import plotly.io as pio
    from robust_prune.widgets import use_static_images
    if not use_static_images(): raise SystemExit("kaleido cannot draw here (it needs Chrome or Chromium)")
    png = pio.renderers["png"]
    nb, added = nbformat.read(path, as_version=4), 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = out.get("data", {})
            if "application/vnd.plotly.v1+json" not in data or "image/png" in data: continue
            fig = pio.from_json(json.dumps(data["application/vnd.plotly.v1+json"]))
            data["image/png"] = png.to_mimebundle(fig.to_dict())["image/png"]  # what the renderer stores on display
            added += 1
    nbformat.write(nb, path)
    return added


def main(argv: list[str]) -> int:
    if not argv: raise SystemExit(__doc__)
    if argv[0] == "--images-only":
        for name in argv[1:]: print(f"{name}: {add_images(Path(name))} image(s) added")
        return 0
    for name in argv:
        path = Path(name)
        print(f"{path}: stored ({store(path)} output(s) with nothing readable dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
