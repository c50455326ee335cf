"""Build the book: run every chapter with papermill, then render the HTML with Jupyter Book v1.

``python -m kdlib book --profile cpu`` (what ``make book`` runs):

1. each chapter notebook ``book/NN_*.ipynb`` listed in ``_toc.yml`` runs headless with the
   profile as a papermill parameter; the ``cpu`` profile (the published one) writes
   ``executed/`` and ``results/``, any other profile ``_build/<profile>/executed/`` and
   ``_build/<profile>/results/``; an executed notebook is replaced only by a complete run;
2. Jupyter Book builds the HTML from the landing page and the executed notebooks (execution
   off, warnings are errors), into ``_build/<profile>/html``. MathJax is served from the book
   itself, so the pages make no request off the machine.

A failing chapter stops the build, prints its error, and the command exits non-zero.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .io import atomic_write_json, file_sha256

PUBLISHED_PROFILE = "cpu"
ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path:
    """The project folder (holds ``_toc.yml``, ``book/``, ``results/``)."""
    return ROOT


def chapters() -> list[str]:
    """Chapter names in the book's order (``00_foundations``, ...), from ``_toc.yml``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [Path(c["file"]).name for c in toc.get("chapters") or []]


def output_dirs(profile: str) -> tuple[Path, Path]:
    """(executed notebooks, results records) of a profile: the tracked ``executed/`` and
    ``results/`` for the published profile only, ``_build/<profile>/`` for every other one."""
    if profile == PUBLISHED_PROFILE:
        return ROOT / "executed", ROOT / "results"
    return ROOT / "_build" / profile / "executed", ROOT / "_build" / profile / "results"


def fingerprint(name: str, results: Path) -> str:
    """SHA-256 of everything an execution of chapter ``name`` depends on: its source, kdlib's
    sources and data tables, and every record and teacher in ``results``. A build skips a
    chapter whose fingerprint has not changed since it was executed, so a build with nothing
    new rewrites nothing."""
    h = hashlib.sha256()
    files = [ROOT / "book" / f"{name}.ipynb", *sorted((ROOT / "kdlib").rglob("*.py")),
             *sorted((ROOT / "kdlib" / "tables").glob("*")), *sorted(results.rglob("*.json")),
             *sorted(results.rglob("*.pt"))]
    for path in files:
        if path.is_file():
            h.update(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path).encode())
            h.update(file_sha256(path).encode())
    return h.hexdigest()


def run_chapter(name: str, profile: str, executed: Path) -> float:
    """Execute ``book/<name>.ipynb`` with papermill and move the result into ``executed``
    only when every cell ran: a failing or killed chapter leaves the previous executed
    notebook in place (the failed run is kept in ``_build/<profile>/failed/`` to read).
    Returns seconds."""
    import papermill as pm
    executed.mkdir(parents=True, exist_ok=True)
    work = ROOT / "_build" / profile / "running"
    work.mkdir(parents=True, exist_ok=True)
    os.environ["KDLIB_HEADLESS"] = "1"  # chapters draw static figures and hide progress bars
    t0 = time.perf_counter()
    out = work / f"{name}.ipynb"
    try:
        # results_dir stays the chapter's default (results/ only for the published profile), so
        # no machine-specific path lands in the page
        pm.execute_notebook(ROOT / "book" / f"{name}.ipynb", out, parameters={"profile": profile},
                            cwd=str(ROOT / "book"), kernel_name="python3", progress_bar=False)
    except BaseException:
        if out.exists():
            (ROOT / "_build" / profile / "failed").mkdir(parents=True, exist_ok=True)
            os.replace(out, ROOT / "_build" / profile / "failed" / f"{name}.ipynb")
        raise
    os.replace(out, executed / f"{name}.ipynb")
    return time.perf_counter() - t0


def build_html(profile: str, executed: Path) -> Path:
    """Render the HTML book from the landing page and the executed chapters; returns its folder."""
    out = ROOT / "_build" / profile
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for item in ("_config.yml", "book", "_vendor"):
        (src / item).symlink_to(ROOT / item)
    (src / "executed").symlink_to(executed)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    done = [c for c in toc.pop("chapters", None) or [] if (executed / (Path(c["file"]).name + ".ipynb")).is_file()]
    if done:  # Jupyter Book refuses an empty chapter list
        toc["chapters"] = done
    (src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    jb = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(jb), "build", str(src), "--path-output", str(out), "--builder", "html", "--warningiserror",
                    "--quiet"], check=True)
    return out / "_build" / "html"


def build(profile: str = PUBLISHED_PROFILE, chapters: list[str] | None = None, skip_html: bool = False) -> int:
    """Run the chapters of ``profile`` and build the HTML; returns a process exit code."""
    from . import profiles
    profiles.get(profile)  # a clear error for an unknown profile before any work
    names = globals()["chapters"]()
    if chapters:
        unknown = sorted(set(chapters) - set(names))
        if unknown:
            raise ValueError(f"unknown chapter(s) {', '.join(unknown)}; valid: {', '.join(names) or '(none yet)'}")
        names = [n for n in names if n in chapters]
    executed, results = output_dirs(profile)
    stamps_file = executed / "fingerprints.json"
    stamps = json.loads(stamps_file.read_text()) if stamps_file.is_file() else {}
    times = {}
    for name in names:
        if stamps.get(name) == fingerprint(name, results) and (executed / f"{name}.ipynb").is_file():
            print(f"[book] {name}: up to date (nothing it reads has changed)", flush=True)
            continue
        print(f"[book] running {name} (profile {profile}) ...", flush=True)
        try:
            times[name] = run_chapter(name, profile, executed)
        except Exception as e:  # papermill re-raises the cell's error: show it and stop
            print(f"[book] chapter {name} FAILED:\n{e}", file=sys.stderr)
            return 1
        print(f"[book] {name}: {times[name]:.1f} s", flush=True)
    if times:  # after the runs: what the chapters that ran now read is what they ran with
        stamps.update({name: fingerprint(name, results) for name in times})
        atomic_write_json(stamps_file, stamps)
    html = None
    if not skip_html:
        if not (ROOT / "_vendor" / "mathjax" / "tex-svg-full.js").is_file():
            print("[book] MathJax is missing from _vendor/mathjax; run `make setup`", file=sys.stderr)
            return 1
        t0 = time.perf_counter()
        html = build_html(profile, executed)
        times["(html)"] = time.perf_counter() - t0
    print("\n[book] chapter times (s):")
    for name, sec in times.items():
        print(f"  {name:<24} {sec:8.1f}")
    print(f"  {'total':<24} {sum(times.values()):8.1f}")
    print(f"[book] executed notebooks: {os.path.relpath(executed)}")
    if html:
        print(f"[book] HTML: {html / 'index.html'}")
    return 0
