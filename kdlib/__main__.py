"""Command line: ``python -m kdlib <command>`` (see ``--help``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _list(kind: str) -> list[str]:
    if kind == "datasets":
        from .data import list_datasets
        return list_datasets()
    if kind == "models":
        from .models import list_models
        return list_models()
    if kind == "methods":
        from .methods import list_methods
        return list_methods()
    from .profiles import list_profiles
    return list_profiles()


def _profile(args):
    """The profile the options name; ``--results-dir`` defaults to where that profile's records
    live (``results/`` for the published profile only, ``_build/<profile>/results`` otherwise)."""
    from . import profiles
    from .book import output_dirs
    p = profiles.get(args.profile, device=args.device, epochs=args.epochs, teacher_epochs=args.teacher_epochs,
                     seeds=getattr(args, "seeds", None))
    if args.results_dir is None:
        args.results_dir = str(output_dirs(p.name)[1])
    return p


def cmd_train_teacher(args) -> None:
    from . import teachers
    p = _profile(args)
    t = teachers.get(args.arch, p, data_root=args.data_root, results_dir=args.results_dir,
                     force=args.force, progress=not args.quiet)
    print(f"teacher {t.arch} ({p.name} profile): test accuracy {t.test_acc:.2f}%")
    print(f"checkpoint: {t.checkpoint} (sha256 {t.sha256[:12]})")
    print(f"record: {args.results_dir}/{t.record['key']}.json")


def _hparams(text: str | None) -> dict:
    """The method hyperparameters of ``--hparams`` (a JSON object; none when not given)."""
    if not text:
        return {}
    try:
        hparams = json.loads(text)
    except json.JSONDecodeError:
        hparams = None
    if not isinstance(hparams, dict):
        raise ValueError(f"--hparams is not a JSON object: {text!r}; expected e.g. '{{\"T\": 2}}'")
    return hparams


def cmd_distill(args) -> None:
    from . import experiments, methods, models, teachers
    p = _profile(args)
    hparams = _hparams(args.hparams)
    methods.create(args.method, **hparams)  # bad names fail here, before any training
    for arch in (args.teacher, args.student):
        if arch not in models.list_models():
            models.create_model(arch)  # raises the error that lists the valid models
    t = teachers.get(args.teacher, p, data_root=args.data_root, results_dir=args.results_dir,
                     progress=not args.quiet)
    recs = experiments.run(p, t, args.student, {args.method: {"method": args.method, **hparams}},
                           data_root=args.data_root, results_dir=args.results_dir, force=args.force,
                           progress=not args.quiet)
    for r in recs:
        print(f"{args.method} {args.teacher}->{args.student} seed {r['config']['seed']}: "
              f"last {r['last_acc']:.2f}%, best {r['best_acc']:.2f}% (epoch {r['best_epoch']}), "
              f"{r['wall_time']:.1f} s, record {args.results_dir}/{r['key']}.json")


def cmd_pilot(args) -> None:
    from . import experiments
    seeds = tuple(args.seeds) if args.seeds else experiments.PILOT_SEEDS
    # --costs alone times the students; the grid's cells run unless only the costs were asked for
    cells = ([tuple(int(x) for x in c.split("x")) for c in args.cells] if args.cells
             else [] if args.costs else experiments.PILOT_CELLS)
    for cell in cells:
        if len(cell) != 3:
            raise ValueError(f"--cells takes TRAINxEPOCHSxBATCH, e.g. 10000x15x64; got {'x'.join(map(str, cell))}")
    if args.costs:
        for r in experiments.pilot_costs(results_dir=args.results_dir, data_root=args.data_root,
                                         progress=not args.quiet):
            print(f"cost {r['student']:>12} {r['label']:>8}: {r['ms_per_image']:.2f} ms per training image")
    for cell in cells:
        recs = experiments.pilot([cell], seeds, results_dir=args.results_dir, data_root=args.data_root,
                                 progress=not args.quiet)
        for r in recs:
            print(f"pilot {'x'.join(map(str, cell))} {r['label']:>8} seed {r['config']['seed']}: "
                  f"{r['last_acc']:.2f}% ({r['wall_time']:.0f} s)", flush=True)


def cmd_runs(args) -> None:
    from . import experiments
    p = _profile(args)
    experiments.train_book(p, chapters=args.chapter, data_root=args.data_root, results_dir=args.results_dir,
                           progress=not args.quiet, train=not args.status, force=args.force,
                           report=lambda line: print(line, flush=True))


def cmd_book(args) -> None:
    from .book import build
    sys.exit(build(args.profile, chapters=args.chapter, skip_html=args.no_html))


def cmd_bench(args) -> None:
    """Run the benchmark of the source checkout (``bench/run.py``) with the remaining arguments."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "run.py").is_file():
        raise FileNotFoundError(f"{root / 'bench' / 'run.py'} not found: the benchmark ships with kdlib's "
                                "source checkout, not with the installed package")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from bench.run import main as bench
    bench(args.bench_args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kdlib", description="kdlib: knowledge distillation toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    for kind in ("datasets", "models", "methods", "profiles"):
        sub.add_parser(kind, help=f"list the {kind}")

    def run_args(p):
        p.add_argument("--profile", default="cpu", help="smoke, quick, cpu, gpu or paper (default cpu)")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the profile's)")
        p.add_argument("--epochs", type=int, default=None, help="override the profile's student epochs")
        p.add_argument("--teacher-epochs", type=int, default=None, help="override the profile's teacher epochs")
        p.add_argument("--data-root", default=None)
        p.add_argument("--results-dir", default=None,
                       help="the run store (default: results/ for the cpu profile, _build/<profile>/results otherwise)")
        p.add_argument("--force", action="store_true", help="retrain even if a record exists")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("train-teacher", help="train (or load) a profile's teacher")
    p.add_argument("arch")
    run_args(p)
    p.set_defaults(func=cmd_train_teacher)

    p = sub.add_parser("distill", help="distil a teacher into a student with one method")
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--hparams", default=None, help='JSON of method hyperparameters, e.g. \'{"T": 2}\'')
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    run_args(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("pilot", help="the noise and cost pilot of the cpu profile (chapter 0)")
    p.add_argument("--cells", nargs="+", default=None, help="TRAINxEPOCHSxBATCH cells (default: the pilot's grid)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--costs", action="store_true",
                   help="time the candidate cross-family students (with --cells: then run those cells too)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--results-dir", default="results")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_pilot)

    p = sub.add_parser("runs", help="train every run of the book (main tables and controls), seed by seed")
    p.add_argument("--chapter", action="append", default=None, help="only this chapter's runs (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--status", action="store_true", help="train nothing: say what is stored")
    run_args(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("book", help="run the chapters with papermill and build the HTML book")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--chapter", action="append", default=None, help="only this chapter (repeatable)")
    p.add_argument("--no-html", action="store_true", help="execute the notebooks, skip the HTML")
    p.set_defaults(func=cmd_book)

    # The benchmark parses its own options (`python -m kdlib bench --help` lists them).
    p = sub.add_parser("bench", add_help=False, help="kdlib's trainer against a reference-style loop (bench/)")
    p.set_defaults(func=cmd_bench)

    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command in ("datasets", "models", "methods", "profiles"):
        print("\n".join(_list(args.command)))
        return
    from .io import CheckpointError
    from .train import NonFiniteLossError
    try:
        args.func(args)
    except KeyboardInterrupt:
        parser.exit(130, "interrupted: finished runs are recorded and the last checkpoint is kept; "
                         "run the same command again to resume\n")
    except (ValueError, LookupError, CheckpointError, NonFiniteLossError, OSError) as e:
        parser.exit(2, f"error: {type(e).__name__ + ': ' if isinstance(e, (KeyError, OSError)) else ''}{e}\n")


if __name__ == "__main__":
    main()
