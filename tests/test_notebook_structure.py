"""The notebooks read as documentation: every public name of a module is shown (`show_doc`) in the notebook that
defines it, exported cells stay short enough to read at once, and no notebook points at a file the repository lacks."""
import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb"))
MAX_EXPORTED_LINES = 60


def _cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]


def _module(path: Path) -> str | None:
    m = re.search(r"^#\| default_exp (\S+)", "\n".join(_cells(path)), re.M)
    return m.group(1) if m else None


def _public_names(module: str) -> list[str]:
    "The functions and classes of the module's `__all__` (its constants, tables of values, are shown by the notebooks' prose)."
    tree = ast.parse((ROOT / "robust_prune" / f"{module.replace('.', '/')}.py").read_text())
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return [e.value for e in node.value.elts if e.value in defined]
    return []


def _exported(cell: str) -> bool:
    return any(line.strip() in ("#| export", "#| exports") for line in cell.splitlines()[:3])


EXPORTING = [p for p in NOTEBOOKS if _module(p)]


@pytest.mark.parametrize("nb", EXPORTING, ids=lambda p: p.stem)
def test_every_public_name_has_a_show_doc_in_its_notebook(nb):
    shown = set(re.findall(r"show_doc\(([A-Za-z_][\w.]*)", "\n".join(_cells(nb))))
    missing = [n for n in _public_names(_module(nb)) if n not in shown]
    assert not missing, f"{nb.name}: no show_doc for {', '.join(missing)}"


@pytest.mark.parametrize("nb", EXPORTING, ids=lambda p: p.stem)
def test_every_public_name_is_used_in_an_example_of_its_notebook(nb):
    examples = "\n".join(c for c in _cells(nb) if not _exported(c) and not c.lstrip().startswith("show_doc("))
    missing = [n for n in _public_names(_module(nb)) if not re.search(rf"\b{re.escape(n)}\b", examples)]
    assert not missing, f"{nb.name}: no example uses {', '.join(missing)}"


@pytest.mark.parametrize("nb", EXPORTING, ids=lambda p: p.stem)
def test_exported_cells_are_at_most_sixty_lines(nb):
    long = [(i, len(c.rstrip("\n").splitlines())) for i, c in enumerate(_cells(nb))
            if _exported(c) and len(c.rstrip("\n").splitlines()) > MAX_EXPORTED_LINES]
    assert not long, f"{nb.name}: exported cells (index, lines) over {MAX_EXPORTED_LINES} lines: {long}"


def test_notebooks_cite_only_files_the_repository_has():
    cited = {(nb.name, f) for nb in NOTEBOOKS for f in re.findall(r"\b([A-Z][A-Z_]+\.md)\b", "\n".join(_cells(nb)))}
    have = {p.name for p in ROOT.rglob("*.md") if not {".venv", "node_modules"} & set(p.parts)}
    absent = sorted((nb, f) for nb, f in cited if f not in have)
    assert not absent, f"notebooks cite files that are not in the repository: {absent}"


def test_the_notebook_test_command_skips_cells_marked_slow_or_gpu(tmp_path, monkeypatch):
    "`make nbtest` (nbdev_test) leaves out `#| slow` and `#| gpu` cells, with the skip flags read from settings.ini as nbdev reads them."
    import nbformat
    from nbdev.config import get_config
    from nbdev.test import test_nb
    monkeypatch.setenv("IN_TEST", "1")  # test_nb sets it; restored afterwards
    flags = get_config(path=ROOT).tst_flags.split()  # what nbdev_test passes as skip_flags
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("ran = True"),
                                         nbformat.v4.new_code_cell("#| slow\nraise RuntimeError('a slow cell ran')"),
                                         nbformat.v4.new_code_cell("#| gpu\nraise RuntimeError('a gpu cell ran')")])
    nbformat.write(nb, tmp_path / "flags.ipynb")
    assert test_nb(tmp_path / "flags.ipynb", skip_flags=flags, showerr=False)[0]
    assert not test_nb(tmp_path / "flags.ipynb", skip_flags=[], showerr=False)[0]  # the cells do fail when run


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_stored_figure_of_a_library_notebook_shows_without_a_kernel(nb):
    "A plotly figure stored as plotly JSON only is blank on GitHub and in notebook viewers: each needs its PNG too."
    outs = [o for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    blank = [o for o in outs if "application/vnd.plotly.v1+json" in o.get("data", {}) and "image/png" not in o["data"]]
    assert not blank, f"{len(blank)} figure(s) stored without an image: run the notebook after `use_static_images()` (tools/store_outputs.py)"
