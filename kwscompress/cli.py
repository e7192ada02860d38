"""The ``kwscompress`` command.

Subcommands: ``demo``, ``run``, ``synth``, ``plugins``, ``estimate``, ``deploy``, ``stream``,
``board-profile``, ``report``.
A user mistake (bad file, key or name) prints one line naming it and exits with status 2, with no
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kwscompress.errors import KwsError, PluginError, Terminated

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

    pm = get_plugin_manager()
    rows = [c.as_dict() for c in pm.all_components()] + pm.broken_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("kind", "name", "plugin", "version", "description")
    for row in rows:
        kind = row["kind"] if row["status"] == "ok" else "[red]BROKEN[/red]"
        table.add_row(kind, *(row[k] for k in ("name", "plugin", "version", "description")))
    Console().print(table)
    return 0


def _report(args: argparse.Namespace) -> int:
    from kwscompress.report import load_run, write_report

    paths = write_report(load_run(args.run_dir))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from kwscompress.plugins import get_plugin_manager
    from kwscompress.report import load_run
    from kwscompress.report.sections import run_config
    from kwscompress.stages.deploy import firmware_inputs, render_firmware

    run = load_run(args.run_dir)
    config = run_config(run.results)
    inputs = firmware_inputs(
        run.results, run.path, args.variant, config.recognizer, args.threshold, args.window_ms
    )
    out = Path(args.out) if args.out else run.path / "firmware" / args.variant
    backend = args.backend or config.deploy.backend
    runtime = args.runtime or config.deploy.runtime
    files = render_firmware(
        get_plugin_manager(), backend, inputs, out, profile=args.profile, runtime=runtime
    )
    for kind, path in files.items():
        print(f"{kind}: {path}")
    shown = ", ".join(f"{key} = {value}" for key, value in inputs.recognizer.items())
    print(f"recognizer: {shown} ({inputs.recognizer_source})")
    return 0


def _stream(args: argparse.Namespace) -> int:
    from kwscompress.stages.recording import score_recording, summary_lines

    record, path = score_recording(
        args.run_dir, args.recording, args.labels, args.variant, args.threshold, args.window_ms,
        args.out, target_per_hour=args.target_per_hour,
    )  # fmt: skip
    for line in summary_lines(record, args.run_dir):
        print(line)
    print(f"record: {path}")
    print(f"(`kwscompress report {args.run_dir}` adds it to the run's report)")
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
    for error in results.get("plugin_errors", []):
        print(
            f"kwscompress: warning: plugin {error['plugin']!r} failed in {error['hook']}: "
            f"{error['error']}",
            file=sys.stderr,
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kwscompress`` command."""
    parser = argparse.ArgumentParser(
        prog="kwscompress", description="Train, estimate and compress keyword spotters for MCUs."
    )
    from kwscompress import __version__

    parser.add_argument("--version", action="version", version=f"kwscompress {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="show the traceback of an error (also KWSCOMPRESS_TRACEBACK=1)",
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

    deploy = sub.add_parser("deploy", help="render firmware for an exported variant of a run")
    deploy.add_argument("run_dir", help="the run directory (holds results.json)")
    deploy.add_argument("--variant", required=True, help="the variant id (e.g. qat-8b or float)")
    deploy.add_argument("--out", help="project folder (default: RUN_DIR/firmware/VARIANT)")
    deploy.add_argument("--backend", help="firmware backend (default: the run's [deploy] backend)")
    deploy.add_argument(
        "--profile", action="store_true", help="switch on the sketch's PROFILE timing lines"
    )
    deploy.add_argument(
        "--threshold",
        type=int,
        help="the recognizer's detection threshold 0..255 (default: the one the run chose; "
        "`kwscompress stream` suggests one for a recording)",
    )
    deploy.add_argument(
        "--window-ms", type=int, help="the recognizer's averaging window (default: the run's)"
    )
    deploy.add_argument(
        "--runtime",
        choices=("tflm", "native"),
        help="how the sketch runs the model: the TFLM interpreter, or generated C kernels "
        "(default: the run's [deploy] runtime, tflm)",
    )
    deploy.set_defaults(handler=_deploy)

    stream = sub.add_parser(
        "stream",
        help="run a deployed variant and its recognizer over a recording, as the device would",
    )
    stream.add_argument("run_dir", help="the run directory (holds results.json)")
    stream.add_argument("recording", help="the audio file (WAV, FLAC, ...; any rate, any channels)")
    stream.add_argument(
        "--labels",
        help="Audacity label file of the words said in it (start, end, word per line); "
        "without one the recording is taken to hold no keyword",
    )
    stream.add_argument(
        "--variant", help="the variant id (default: the first of the run's [deploy] variants)"
    )
    stream.add_argument(
        "--threshold", type=int, help="detection threshold 0..255 (default: the firmware's)"
    )
    stream.add_argument(
        "--window-ms", type=int, help="averaging window in ms (default: the firmware's)"
    )
    stream.add_argument(
        "--target-per-hour",
        type=float,
        help="false accepts per hour the suggested threshold is for "
        "(default: the run's [stream] target_false_accepts_per_hour)",
    )
    stream.add_argument(
        "--out", help="where to write the JSON record "
        "(default: RUN_DIR/stream/recordings/RECORDING.VARIANT.json)",
    )  # fmt: skip
    stream.set_defaults(handler=_stream)

    from kwscompress.board_log import add_profile_arguments

    board_profile = sub.add_parser(
        "board-profile", help="read the sketch's PROFILE lines (serial port or log) into a table"
    )
    add_profile_arguments(board_profile)

    report = sub.add_parser("report", help="write report.html and report.md for a run")
    report.add_argument("run_dir", help="the run directory (holds results.json)")
    report.set_defaults(handler=_report)
    for command in sub.choices.values():  # also accepted after the subcommand
        command.add_argument(
            "--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kwscompress`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    show_traceback = args.traceback or os.environ.get("KWSCOMPRESS_TRACEBACK", "") not in ("", "0")
    previous = _stop_on_sigterm()
    try:
        return args.handler(args)
    except KwsError as exc:
        if show_traceback:
            traceback.print_exception(exc)
        hint = ""
        if isinstance(exc, PluginError) and not show_traceback:
            where = f"in {exc.log}, or " if exc.log else ""
            hint = f" (the traceback is {where}shown with --traceback)"
        print(f"kwscompress: error: {exc}{hint}", file=sys.stderr)
        return 2
    except Terminated:
        print("kwscompress: terminated; finished stages are saved", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("kwscompress: interrupted; finished stages are saved", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm() -> Any:
    """Make SIGTERM stop the command the way Ctrl-C does: workers stopped, message, status."""

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    try:
        return signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (the command called from a thread)
        return None


if __name__ == "__main__":
    sys.exit(main())
