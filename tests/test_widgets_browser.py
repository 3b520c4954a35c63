"""The three widgets in a real JupyterLab, in headless Chromium: they render, a slider move updates the page and the kernel.

A JupyterLab server runs on 127.0.0.1 (free port, random token) over a temporary folder holding a small notebook
that builds the widgets on the digits demo; Playwright drives Debian's Chromium (`apt-get install chromium`,
`make browser-deps`). Screenshots go to `$ROBUST_PRUNE_SCREENSHOTS` (default `tests/artifacts/`, git-ignored).
"""
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("ROBUST_PRUNE_SCREENSHOTS", ROOT / "tests" / "artifacts"))

# The notebook the browser runs: the demo network, one widget per cell, and a cell that prints the kernel's view.
CELLS = [
    """import torch
torch.set_num_threads(1)
from robust_prune.allocation import allocate
from robust_prune.attacks import AttackSpec, adversarial_batch
from robust_prune.data import get_loaders
from robust_prune.finetune import DIGITS_EPS, robust_digits_model
from robust_prune.mrs import compute_mrs
from robust_prune.widgets import AllocationEditor, FineTuneLauncher, SensitivityExplorer
model = robust_digits_model()
dls = get_loaders("digits", batch_size=64, train_subset=256, test_subset=128, seed=0)
batch = adversarial_batch(model, dls.test, AttackSpec("pgd", DIGITS_EPS, steps=5), n=128)
reports = {m: compute_mrs(model, batch.x_adv, batch.y, method=m) for m in ("rewind", "taylor")}""",
    "explorer = SensitivityExplorer(reports)\nexplorer",
    "editor = AllocationEditor(allocate(reports['rewind'], model, target=0.5), model)\neditor",
    """launcher = FineTuneLauncher(model, dls, editor, epochs=1, attack=AttackSpec("pgd", DIGITS_EPS, steps=2), eval_samples=64)
launcher""",
    """a = editor.allocation
print(f"MARKER conv1={a['conv1']:.6f} params={int(editor.cm.count(a.ratios)['params'])} rule={a.rule} END")""",
]


def _chromium_problem() -> str | None:
    "Why Chromium cannot run here, or None."
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing: install Debian's chromium package (`make browser-deps` or `apt-get install -y chromium`)"
    try:
        with sync_playwright() as p:
            p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True).close()
    except Exception as e:
        return f"{CHROMIUM} does not start: {str(e).splitlines()[0]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET"):
    req = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
        return json.loads(body) if body else None


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server over a folder with the demo notebook; yields (base url, token, notebook name)."
    root, settings = tmp_path / "root", tmp_path / "settings"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, root / "widgets_demo.ipynb")
    # no news pop-up; render every cell (windowing would leave cells outside the viewport unrendered)
    for ext, name, value in (("@jupyterlab/apputils-extension", "notification", {"fetchNews": "false", "checkForUpdates": False}),
                             ("@jupyterlab/notebook-extension", "tracker", {"windowingMode": "none", "autoStartDefaultKernel": True})):
        (settings / ext).mkdir(parents=True, exist_ok=True)
        (settings / ext / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0: cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                _api(base, token, "/api/status")
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not start:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield base, token, "widgets_demo.ipynb"
    finally:
        try:
            for k in _api(base, token, "/api/kernels"): _api(base, token, f"/api/kernels/{k['id']}", "DELETE")
        except OSError:
            pass
        proc.send_signal(signal.SIGINT)  # jupyter_server shuts down on a second SIGINT without asking
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _marker_cell(page):
    return page.locator(".jp-Notebook .jp-Cell").nth(len(CELLS) - 1)


def _marker(page) -> dict:
    "The kernel's view printed by the last cell: conv1 ratio, predicted params, rule."
    text = _marker_cell(page).locator(".jp-OutputArea-output").inner_text()
    m = re.search(r"MARKER conv1=([\d.]+) params=(\d+) rule=(\S+) END", text)
    assert m, f"no marker in the last cell's output: {text!r}"
    return dict(conv1=float(m[1]), params=int(m[2]), rule=m[3])


def _run_marker_cell(page) -> None:
    prompt = _marker_cell(page).locator(".jp-InputPrompt")
    before = prompt.inner_text()
    _marker_cell(page).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")  # run the cell and stay on it
    # the prompt goes to [*], then to the next execution count
    expect(prompt).not_to_have_text(before, timeout=60_000)
    expect(prompt).not_to_contain_text("*", timeout=60_000)


def test_widgets_render_and_slider_updates_page_and_kernel(lab):
    problem = _chromium_problem()
    if problem: pytest.skip(problem)
    base, token, name = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.set_default_timeout(60_000)
            page.goto(f"{base}/lab/tree/{name}?token={token}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
            # wait for the kernel before running (the status bar names it and its state)
            expect(page.get_by_role("button", name=re.compile(r"Python 3.*Idle"))).to_be_visible(timeout=120_000)
            dialog = page.get_by_role("dialog")
            if dialog.count() and dialog.get_by_role("button", name="Select Kernel").count():
                dialog.get_by_role("button", name="Select Kernel").click()  # keep the notebook's own kernel
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()

            # the kernel prints the marker last: by then every widget is built
            expect(page.locator(".jp-OutputArea-output", has_text="MARKER")).to_be_visible(timeout=240_000)
            explorer, editor, launcher = (page.locator(f".rp-{k}") for k in ("sensitivity-explorer", "allocation-editor",
                                                                              "finetune-launcher"))
            for w in (explorer, editor, launcher):
                expect(w).to_be_visible(timeout=60_000)
                expect(w.locator(".js-plotly-plot .main-svg").first).to_be_visible(timeout=60_000)  # plotly drew
            expect(explorer.locator(".js-plotly-plot .bars path").first).to_be_attached()
            sliders = editor.locator(".rp-group-slider")
            expect(sliders).to_have_count(9)
            expect(editor.locator(".widget-slider").first).to_be_visible()
            assert "Error displaying widget" not in page.locator(".jp-Notebook").inner_text()
            before = _marker(page)
            readout = editor.locator(".rp-readout")
            shown = readout.inner_text()
            assert f"{before['params']:,}" in shown  # the page shows what the kernel predicts
            page.screenshot(path=str(SHOTS / "widgets_rendered.png"), full_page=True)
            explorer.screenshot(path=str(SHOTS / "sensitivity_explorer.png"))
            editor.screenshot(path=str(SHOTS / "allocation_editor_before.png"))

            # move the conv1 slider two steps to the right with the keyboard
            handle = sliders.first.locator(".noUi-handle")
            handle.focus()
            handle.press("ArrowRight")
            handle.press("ArrowRight")
            expect(readout).not_to_have_text(shown, timeout=30_000)  # the page changed

            # the kernel's side: the marker cell runs after the slider's messages, so it sees the final value
            _run_marker_cell(page)
            after = _marker(page)
            assert after["conv1"] > before["conv1"] and after["rule"] == "manual" and after["params"] < before["params"]
            expect(readout).to_contain_text(f"params {after['params']:,} of", timeout=30_000)
            assert f"{before['params']:,}" not in readout.inner_text()
            editor.screenshot(path=str(SHOTS / "allocation_editor_after.png"))

            # Launch from the page: the thread reports back into the progress bar, status and curves
            launcher.get_by_role("button", name="Launch").click()
            expect(launcher.get_by_text("done:")).to_be_visible(timeout=180_000)
            expect(launcher.locator(".js-plotly-plot .scatterlayer .trace").first).to_be_attached()
            launcher.screenshot(path=str(SHOTS / "finetune_launcher_done.png"))
            page.screenshot(path=str(SHOTS / "widgets_after.png"), full_page=True)
        except BaseException:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
