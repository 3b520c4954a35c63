"""Every tutorial, run fresh in a Jupyter kernel as a student runs it, reproduces the key numbers stored in it
(each within the tolerance the notebook states), so the prose and the stored outputs cannot drift from the code."""
import importlib.util
from pathlib import Path

import nbformat
import pytest

_spec = importlib.util.spec_from_file_location("run_tutorials", Path(__file__).resolve().parents[1] / "tools" / "run_tutorials.py")
rt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rt)


def test_drift_reports_numbers_outside_their_tolerance_and_missing_or_new_ones():
    stored = {"a": [0.80, 0.02], "b": [1.0, 0.1], "c": [0.5, 0.0]}
    assert rt.drift(stored, {"a": [0.819, 0.02], "b": [1.09, 0.1], "c": [0.5, 0.0]}) == []
    lines = rt.drift(stored, {"a": [0.83, 0.02], "b": [1.0, 0.1], "d": [1.0, 0.0]})
    assert sorted(l.split(":")[0] for l in lines) == ["a", "c", "d"]
    assert rt.drift({}, {"a": [1.0, 0.0]}) == ["the stored notebook prints no key numbers"]
    assert rt.drift({"a": [0.5, 0.1]}, {"a": [float("nan"), 0.1]})  # NaN never reproduces a number


def test_key_numbers_are_read_from_stream_outputs_only():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("stream", name="stdout", text='noise\nkey numbers: {"x": [1.5, 0.1]}\n')]),
        nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("execute_result", data={"text/plain": 'key numbers: {"y": [2, 0]}'})]),
        nbformat.v4.new_markdown_cell('key numbers: {"z": [3, 0]}')])
    assert rt.key_numbers(nb) == {"x": [1.5, 0.1]}


# In the test command: the workshop that prunes and fine-tunes from the launcher (03), the bring-your-own-model workshop
# (04: a torchvision and a timm network through the whole chain) and one paper notebook that scores (03_input_size);
# every tutorial with ROBUST_PRUNE_SLOW=1 (about 11 minutes more on 2 cores). The stored-figure and structure checks
# below run on every tutorial.
FAST = {"03_robust_finetuning", "04_bring_your_own_model", "03_input_size"}


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=() if p.stem in FAST else pytest.mark.slow) for p in rt.tutorials()])
def test_fresh_run_of_tutorial_reproduces_its_stored_key_numbers(path):
    assert rt.key_numbers(nbformat.read(path, as_version=4)), f"{path.name} stores no key numbers"
    stored, where = rt.reference(path)  # the stored outputs, or this kind of CPU's own record (tools/run_tutorials.py)
    fresh = rt.key_numbers(rt.execute(path))  # raises CellExecutionError when a cell fails
    assert rt.drift(stored, fresh) == [], f"drift from {where}"


def test_the_tutorials_the_test_command_runs_fresh_exist():
    assert FAST <= {p.stem for p in rt.tutorials()}


def test_a_machine_that_rounds_otherwise_is_compared_with_its_own_record(tmp_path, monkeypatch):
    path = rt.tutorials()[0]
    stored = rt.key_numbers(nbformat.read(path, as_version=4))
    monkeypatch.setattr(rt, "REFERENCES", tmp_path / "key_numbers.json")
    assert rt.reference(path) == (stored, "the notebook's stored outputs")
    own = {k: [v + 1.0, tol] for k, (v, tol) in stored.items()}
    rt._write_reference(path, own)
    me = rt.numerics_id()
    assert rt.reference(path)[0] == own and me in rt.reference(path)[1]
    monkeypatch.setattr(rt, "numerics_id", lambda threads=2: "another-cpu")
    assert rt.reference(path)[0] == stored  # other machines keep the stored outputs
    rt._write_reference(path, None)  # (what --save does: the stored outputs are that machine's reference again)
    assert list(rt._references()) == [me]


@pytest.mark.parametrize("path", rt.tutorials(), ids=lambda p: p.stem)
def test_stored_tutorial_shows_every_figure_without_a_kernel_and_keeps_its_checks_hidden(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = [o for c in code for o in c.get("outputs", [])]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert all("image/png" in o["data"] for o in figures), "a plotly figure stored without its image (run with kaleido and Chromium)"
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert all(c.source.startswith("#| hide") for c in code if "\nassert " in "\n" + c.source), "a visible assert cell"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "**The question.**" in text and "**Back to the question.**" in text and "## What you learned" in text
