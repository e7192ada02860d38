"""The ``kwscompress`` command.

Subcommands: ``demo``, ``run``, ``synth``, ``plugins``, ``estimate``, ``report``. A user mistake
(bad file, key or name) prints one line naming it and exits with status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kwscompress.errors import KwsError

Command = Callable[[argparse.Namespace], int]


def _demo(args: argparse.Namespace) -> int:
    from kwscompress.config import Config, quick_overrides
    from kwscompress.pipeline import Pipeline

    config = Config()
    name = "demo"
    if args.quick:
        config = config.updated(quick_overrides(), source="--quick")
        name = "demo-quick"
    config = config.updated({"run": {"name": name, "out_dir": args.out}})
    run = Pipeline(config).run()
    _print_summary(run.path, run.results)
    return 0


def _run(args: argparse.Namespace) -> int:
    from kwscompress.config import Config
    from kwscompress.pipeline import Pipeline

    config = Config.from_toml(args.config)
    if args.out:
        config = config.updated({"run": {"out_dir": args.out}})
    run = Pipeline(config).run()
    _print_summary(run.path, run.results)
    return 0


def _synth(args: argparse.Namespace) -> int:
    from kwscompress.config import Config, quick_overrides
    from kwscompress.data.sources import synthesize_dataset

    config = Config()
    if args.quick:
        config = config.updated(quick_overrides(), source="--quick")
    config = config.updated({"data": {"synth": {"seed": args.seed}}}, source="--seed")
    summary = synthesize_dataset(Path(args.out), config.data)
    print(json.dumps(summary, indent=2))
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from kwscompress.plugins import get_plugin_manager

    rows = [c.as_dict() for c in get_plugin_manager().all_components()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("kind", "name", "plugin", "version", "description")
    for row in rows:
        table.add_row(*(row[k] for k in ("kind", "name", "plugin", "version", "description")))
    Console().print(table)
    return 0


def _report(args: argparse.Namespace) -> int:
    from kwscompress.report import load_run, write_report

    paths = write_report(load_run(args.run_dir))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _print_summary(path: Path, results: dict) -> None:
    accuracy = results.get("evaluate", {}).get("accuracy", {})
    clips = results.get("evaluate", {}).get("reference_clips", {}).get("clips", [])
    print(f"run directory: {path}")
    for split, value in accuracy.items():
        print(f"  {split:<10} accuracy {value:.2%}")
    for clip in clips:
        mark = "ok" if clip["expected"] == clip["predicted"] else "WRONG"
        print(f"  real clip {clip['file']:<20} -> {clip['predicted']:<10} ({mark})")
    if "report" in results:
        print(f"report: {path / results['report']['html']}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kwscompress`` command."""
    parser = argparse.ArgumentParser(
        prog="kwscompress", description="Train, estimate and compress keyword spotters for MCUs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the default pipeline on the synthetic dataset")
    demo.add_argument("--out", default="runs", help="parent folder of the run (default: runs)")
    demo.add_argument("--quick", action="store_true", help="the small smoke configuration")
    demo.set_defaults(handler=_demo)

    run = sub.add_parser("run", help="run the pipeline configured by a TOML file")
    run.add_argument("config", help="path of the TOML config")
    run.add_argument("--out", help="parent folder of the run (overrides run.out_dir)")
    run.set_defaults(handler=_run)

    synth = sub.add_parser("synth", help="write the synthetic Speech Commands dataset")
    synth.add_argument("--out", required=True, help="new folder to write the dataset into")
    synth.add_argument("--seed", type=int, default=1234, help="random seed (default: 1234)")
    synth.add_argument("--quick", action="store_true", help="a small dataset")
    synth.set_defaults(handler=_synth)

    plugins = sub.add_parser("plugins", help="list every registered component")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(handler=_plugins)

    from kwscompress.estimate import configure_estimate_parser, estimate_command

    estimate = sub.add_parser("estimate", help="parameters, MACs, memory and board fit of a model")
    configure_estimate_parser(estimate)
    estimate.set_defaults(handler=estimate_command)

    report = sub.add_parser("report", help="write report.html and report.md for a run")
    report.add_argument("run_dir", help="the run directory (holds results.json)")
    report.set_defaults(handler=_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kwscompress`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KwsError as exc:
        print(f"kwscompress: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kwscompress: interrupted; finished stages are saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
