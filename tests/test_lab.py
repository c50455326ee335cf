"""JupyterLab as a reader uses it: a real Lab server, driven in headless Chromium by Playwright
(the system Chromium, no browser download), runs a chapter in the smoke profile with Run All.
Its numbers, prose and boxes must render (no raw ``{glue:…}``, ``{{…}}`` or ``:::`` markup) and
its widgets must be live: moving a slider redraws the figure it drives."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from kdlib import book
from kdlib.chapter import HEADLESS_ENV

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
CHAPTER = "00_foundations"      # the chapter with the most widgets and prose cells
RAW_MARKUP = ("{glue:", "{{", ":::", "```{")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smoke_copy(folder) -> str:
    """The chapter with its ``profile`` parameter set to smoke (what ``papermill -p`` does)."""
    nb = json.loads((book.repo_root() / "book" / f"{CHAPTER}.ipynb").read_text())
    params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    params["source"] = "".join(params["source"]) + '\nprofile = "smoke"'
    (folder / f"{CHAPTER}.ipynb").write_text(json.dumps(nb))
    return f"{CHAPTER}.ipynb"


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free port, rooted at ``tmp_path``, rendering every cell (no
    windowing, so the whole notebook is in the page); yields ``(base_url, token)``."""
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    env.pop(HEADLESS_ENV, None)  # a reader's Lab: live widgets
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--allow-root",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start in 60 s")
        yield base, token
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.timeout(600)
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_a_chapter_reads_in_jupyterlab_after_run_all(lab, tmp_path):
    base, token = lab
    name = _smoke_copy(tmp_path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/lab/tree/{name}?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)  # the kernel is up
        # prompts of the code cells whose input is shown (collapsed inputs show none)
        prompts = ("[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                   ".map(e => e.textContent.trim()).filter(t => t)")
        for _ in range(3):  # a Run All sent while the kernel's session is still connecting is lost
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            try:
                page.wait_for_function(f"() => {prompts}.some(t => /\\[[*\\d]/.test(t))", timeout=15_000)
                break
            except sync_api.TimeoutError:
                continue
        failed = ("[...document.querySelectorAll('.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]')]"
                  ".some(e => e.textContent.includes('Traceback'))")
        # Lab runs the cells one by one: done when the last one has its count, or a cell failed
        try:
            page.wait_for_function(f"() => {{ const p = {prompts}; return !p.some(t => t.includes('*')) && "
                                   f"(/\\[\\d+\\]/.test(p[p.length - 1]) || {failed}); }}", timeout=300_000, polling=1000)
        except sync_api.TimeoutError:
            page.screenshot(path=str(tmp_path / "lab.png"), full_page=True)
            pytest.fail(f"Run All did not finish in 300 s; prompts {page.evaluate(f'() => {prompts}')}; "
                        f"screenshot {tmp_path / 'lab.png'}")
        errors = [t for t in page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
                  .all_inner_texts() if "Traceback (most recent call last)" in t]
        assert not errors, errors[0][-3000:]
        unrun = [t for t in page.evaluate(f"() => {prompts}") if not re.fullmatch(r"\[\d+\]:", t)]
        assert not unrun, f"{len(unrun)} cells did not run: {unrun[:5]}"
        rendered = page.locator(".jp-MarkdownCell .jp-RenderedMarkdown, .jp-OutputArea .jp-RenderedMarkdown")
        texts = rendered.all_inner_texts()
        assert len(texts) > 30, f"only {len(texts)} rendered Markdown blocks"
        raw = [t for t in texts if any(m in t for m in RAW_MARKUP)]
        assert not raw, f"raw markup in Lab: {raw[0][:300]!r}"
        assert page.locator(".jp-OutputArea .admonition").count() >= 1, "no box rendered in an output"
        assert page.locator(".jp-OutputArea mjx-container, .jp-OutputArea .MathJax").count() >= 1, "no math in outputs"

        # the live widgets: a slider moved by the keyboard redraws the figure below it
        interact = page.locator(".widget-interact").first
        interact.scroll_into_view_if_needed()
        figure = interact.locator(".jp-OutputArea img").first
        figure.wait_for(timeout=30_000)
        before = figure.get_attribute("src")
        interact.locator(".noUi-handle").first.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function("([el, src]) => el.isConnected === false || el.getAttribute('src') !== src",
                               arg=[figure.element_handle(), before], timeout=30_000)
        after = interact.locator(".jp-OutputArea img").first.get_attribute("src")
        assert after and after != before, "moving the slider did not redraw the figure"
        browser.close()
