"""Write README.md from nbs/index.ipynb (markdown cells as they are, code cells as fenced Python with their text output).

nbdev 2's `nbdev_readme` needs Quarto; this does the same job for our index notebook with nbformat alone.
Usage: python tools/make_readme.py [--check]   (--check: exit 1 if README.md would change)
"""
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def render(nb_path: Path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    out = []
    for cell in nb.cells:
        src = cell.source.strip("\n")
        if cell.cell_type == "markdown":
            out.append(src)
        elif cell.cell_type == "code":
            lines = [l for l in src.splitlines() if not l.startswith("#|")]
            if any(l.startswith("#| hide") for l in src.splitlines()) or not "".join(lines).strip():
                continue
            out.append("```python\n" + "\n".join(lines) + "\n```")
            text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream" and o.get("name") == "stdout")
            if text.strip():
                out.append("```\n" + re.sub(r"\x1b\[[0-9;]*m", "", text).rstrip("\n") + "\n```")
    head = "<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->\n\n"
    return head + "\n\n".join(out) + "\n"


def main() -> int:
    text = render(ROOT / "nbs" / "index.ipynb")
    readme = ROOT / "README.md"
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text(encoding="utf-8") != text:
            print("README.md is out of date: run python tools/make_readme.py")
            return 1
        return 0
    readme.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
