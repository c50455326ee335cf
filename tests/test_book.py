"""The book: sources without outputs, every chapter runs in the smoke profile, and the HTML
renders math, tables and figures in headless Chromium with no request leaving the machine."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from kdlib import book

ROOT = book.repo_root()
CHAPTERS = book.chapters()


def test_chapter_sources_are_stored_without_outputs():
    notebooks = sorted((ROOT / "book").glob("*.ipynb"))
    assert [p.stem for p in notebooks] == CHAPTERS  # every chapter is in the table of contents
    for path in notebooks:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path.name
        assert "parameters" in code[0]["metadata"].get("tags", []), f"{path.name}: first code cell must be tagged parameters"


def test_figure_and_prose_code_is_hidden_in_the_html_and_shown_in_lab():
    """Cells that draw, display or write prose carry Jupyter Book's ``hide-input`` (a toggle in
    the HTML); only the prose cells also collapse their input in Lab (``source_hidden``)."""
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        for c in json.loads(path.read_text())["cells"]:
            src, meta = "".join(c["source"]), c["metadata"]
            if c["cell_type"] != "code" or src.startswith("import") or "ch = Chapter(" in src:
                continue
            tags = meta.get("tags", [])
            if any(k in src for k in ("plt.", "plots.", "display(")) and "parameters" not in tags:
                assert {"hide-input", "remove-cell"} & set(tags), f"{path.name}: {src[:60]!r}"
            assert meta.get("jupyter", {}).get("source_hidden", False) == (
                src.startswith("plots.prose(") or "remove-cell" in tags), f"{path.name}: {src[:60]!r}"


@pytest.fixture(scope="session")
def smoke_book():
    """Run every chapter in the smoke profile and build the HTML (the CI check of the book)."""
    assert book.build("smoke") == 0
    executed, _ = book.output_dirs("smoke")
    return executed, ROOT / "_build" / "smoke" / "_build" / "html"


def test_every_chapter_executes_in_the_smoke_profile(smoke_book):
    executed, _ = smoke_book
    for name in CHAPTERS:
        nb = json.loads((executed / f"{name}.ipynb").read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
        assert nb["metadata"]["papermill"]["parameters"]["profile"] == "smoke"


def test_a_wrong_parameter_gets_a_clear_error_in_the_next_cell(tmp_path):
    import papermill as pm
    out = tmp_path / "bad.ipynb"
    with pytest.raises(pm.PapermillExecutionError, match="parameter profile='laptop' is invalid"):
        pm.execute_notebook(ROOT / "book" / "00_foundations.ipynb", out, parameters={"profile": "laptop"},
                            cwd=str(ROOT / "book"), kernel_name="python3", progress_bar=False)
    code = [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"]  # papermill adds markdown
    failed = [i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    params_at = next(i for i, c in enumerate(code) if "injected-parameters" in c["metadata"].get("tags", []))
    assert failed == [params_at + 1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_html_renders_offline_in_headless_chromium(smoke_book, tmp_path):
    _, html = smoke_book
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=html))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for page in ["book/intro.html"] + [f"executed/{c}.html" for c in CHAPTERS]:
            netlog = tmp_path / f"{Path(page).stem}.netlog.json"
            dom = subprocess.run(
                ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", f"--log-net-log={netlog}",
                 "--virtual-time-budget=15000", "--dump-dom", f"{base}/{page}"],
                capture_output=True, text=True, timeout=120).stdout
            assert "<table" in dom or page.startswith("book/"), page
            requested = _page_requests(netlog, base)
            if page.startswith("executed/"):
                assert "<mjx-container" in dom, f"{page}: MathJax did not typeset the math"
                assert any("/_static/mathjax/" in u for u in requested), f"{page}: MathJax not served by the book"
                assert '<img' in dom and ("data:image/png" in dom or "_images/" in dom), f"{page}: no figure"
            outside = sorted(u for u in requested if not u.startswith((base, "data:", "blob:")))
            assert not outside, f"{page} requested {outside[:5]}"
    finally:
        server.shutdown()


def _page_requests(netlog: Path, base: str) -> set[str]:
    """URLs the page itself asked for, from Chromium's net log: requests whose initiator is the
    page's origin. (Chromium's own service calls, e.g. its updater, have no page initiator.)"""
    log = json.loads(netlog.read_text())
    types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    return {e["params"]["url"] for e in log["events"]
            if types.get(e["type"]) == "URL_REQUEST_START_JOB" and e.get("params", {}).get("initiator") == base}


def _param_notebook(path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('profile: str = "smoke"\nseeds: list = None', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('from kdlib.chapter import Chapter\nprint(Chapter("t", profile=profile, seeds=seeds).profile.seeds)')])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_papermill_list_parameters_arrive_as_lists_and_unknown_ones_stop(tmp_path):
    """`-p seeds "[0, 1, 2]"` (papermill passes the text) gives seeds 0, 1, 2; `-p epochs -1`,
    a parameter the chapter does not have, stops it with an error naming the valid ones."""
    import papermill as pm
    src, out = tmp_path / "t.ipynb", tmp_path / "out.ipynb"
    _param_notebook(src)
    pm.execute_notebook(src, out, parameters={"seeds": "[0, 1, 2]"}, kernel_name="python3", progress_bar=False)
    assert "".join(json.loads(out.read_text())["cells"][-1]["outputs"][0]["text"]).strip() == "(0, 1, 2)"
    with pytest.raises(pm.PapermillExecutionError, match=r"unknown parameter\(s\) epochs; this chapter's parameters "
                                                         r"are profile, seeds"):
        pm.execute_notebook(src, out, parameters={"epochs": -1}, kernel_name="python3", progress_bar=False)
