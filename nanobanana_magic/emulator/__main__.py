"""Command line: ``python -m nanobanana_magic.emulator`` / ``nanobanana-emulator``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from .faults import DESCRIPTIONS, KINDS, PHASES, parse_fault
from .options import DEFAULT_REFERENCE_MAX_BYTES, DEFAULT_REFERENCE_TIMEOUT, MESSAGE_KEYS, UNKNOWN_TASK_ID_MODES
from .realism import DEFAULT_MEDIANS, DEFAULT_SIGMA, DURATION_MODES
from .server import Emulator
from .tasks import COSTS

READY_LINE = "NanoBanana emulator listening on {url}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; its help documents every knob."""
    kind_lines = []
    width = max(map(len, KINDS))
    for kind, (phases, options) in KINDS.items():
        where = "any phase" if len(phases) == len(PHASES) else "/".join(phases)
        defaults = ", ".join(f"{name}={'unset' if value is None else value}" for name, value in options.items())
        kind_lines.append(f"  {kind:<{width}} {DESCRIPTIONS[kind]}")
        kind_lines.append(f"  {'':<{width}} [{where}]" + (f" options: {defaults}" if defaults else ""))
    parser = argparse.ArgumentParser(
        prog="nanobanana-emulator",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Serve a local, faithful fake of the NanoBanana REST API (generate-2, record-info,\n"
            "credit) with Pillow-drawn results, callbacks and fault injection. When ready it prints\n"
            f"  {READY_LINE.format(url='http://HOST:PORT')}\n"
            "and serves until Ctrl-C or SIGTERM."
        ),
        epilog="\n".join(
            [
                f"fault phases: {', '.join(PHASES)}",
                "fault kinds (and their options with defaults):",
                *kind_lines,
                f"credits per task: {', '.join(f'{res}={cost}' for res, cost in COSTS.items())}",
                "sample reference images: /samples/banana.png, /samples/cat.png, /samples/landscape.png",
            ]
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to bind; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--latency",
        type=_non_negative,
        default=2.0,
        metavar="SECONDS",
        help="seconds from submit until a task ends, with --durations fixed, the default (default: %(default)s)",
    )
    parser.add_argument(
        "--api-key", metavar="KEY", help="the only bearer key accepted (default: any non-empty key); never printed"
    )
    parser.add_argument(
        "--credits", type=int, default=1000, metavar="N", help="starting credit balance (default: %(default)s)"
    )
    parser.add_argument(
        "--error-style",
        choices=("json", "http"),
        default="json",
        help="json: errors as HTTP 200 with a JSON code; http: the code is the HTTP status (default: %(default)s)",
    )
    parser.add_argument(
        "--fail-word",
        action="append",
        metavar="WORD",
        dest="fail_words",
        help="a prompt containing WORD (case-insensitive) fails with successFlag 3; repeatable (default: forbidden)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="PHASE:KIND[:COUNT][:key=value,...]",
        help="queue a fault for the next COUNT (default 1) requests of PHASE; repeatable, "
        "e.g. submit:status:2:status=429,retry_after=1",
    )
    parser.add_argument(
        "--random-faults",
        type=float,
        default=0.0,
        metavar="RATE",
        help="give each API request a random realistic fault with probability RATE, 0..1 (default: %(default)s = off)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1234,
        metavar="N",
        help="seed of the random faults and of lognormal durations, for replayable runs (default: %(default)s)",
    )
    parser.add_argument(
        "--files-base-url",
        metavar="URL",
        help="base of result URLs, {port} is replaced by the bound port, e.g. "
        "http://localhost:{port} (default: this server's own URL)",
    )
    _add_live_service_options(parser)
    _add_realism_options(parser)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr (keys are never logged)")
    parser.add_argument(
        "--parent-pid",
        type=int,
        metavar="PID",
        help="stop when process PID ends (a notebook that started the emulator, say)",
    )
    return parser


def _add_live_service_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("what the live service may also do (API.md; all off by default)")
    group.add_argument(
        "--file-content-type",
        metavar="TYPE",
        help="Content-Type of every result file, e.g. binary/octet-stream, application/binary, "
        "application/octet-stream (default: image/png or image/jpeg by the URL's extension)",
    )
    group.add_argument(
        "--wrong-extension",
        action="store_true",
        help="result URLs end in .jpeg whatever the format: PNG bytes behind a .jpeg URL",
    )
    group.add_argument(
        "--unregistered-polls",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="answer the first N polls of every new task with 404 task not found (default: 0)",
    )
    group.add_argument(
        "--relative-urls", action="store_true", help="resultImageUrl is root-relative (/files/...) instead of absolute"
    )
    group.add_argument(
        "--message-key",
        choices=MESSAGE_KEYS,
        default="msg",
        help="key of the text in error answers; message as on generate-pro (default: %(default)s)",
    )
    group.add_argument(
        "--unknown-task-id",
        choices=UNKNOWN_TASK_ID_MODES,
        default="not_found",
        help="not_found: an unknown task id is code 404; server_exception: an id that is not 32 hex "
        "digits is code 500 \"Server exception, please check the parameters\" "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--trailing-bytes",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="append N bytes after the end-of-image marker of every result file (default: 0)",
    )
    group.add_argument(
        "--failed-code",
        type=_positive_int,
        metavar="CODE",
        help="record-info of a failed task answers JSON code CODE, e.g. 501 \"generation failed\" "
        "(default: code 200 with successFlag 2 or 3)",
    )
    group.add_argument(
        "--reference-timeout",
        type=_positive_float,
        default=DEFAULT_REFERENCE_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for each imageUrls entry (default: %(default)s)",
    )
    group.add_argument(
        "--reference-max-bytes",
        type=_positive_int,
        default=DEFAULT_REFERENCE_MAX_BYTES,
        metavar="N",
        help="imageUrls entries larger than this are drawn as \"too large\" (default: %(default)s)",
    )


def _add_realism_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("realism for long runs and benchmarks")
    medians = ", ".join(f"{res} {seconds:g} s" for res, seconds in DEFAULT_MEDIANS.items())
    group.add_argument(
        "--durations",
        choices=DURATION_MODES,
        default="fixed",
        help="fixed: every task takes --latency seconds; lognormal: each task's duration is drawn "
        f"(seeded by --seed) around the medians ({medians}) with --sigma (default: %(default)s)",
    )
    group.add_argument(
        "--median",
        type=_positive_float,
        metavar="SECONDS",
        help="lognormal median for every resolution (a --median-1k/2k/4k still wins)",
    )
    for resolution, seconds in DEFAULT_MEDIANS.items():
        group.add_argument(
            f"--median-{resolution.lower()}",
            type=_positive_float,
            metavar="SECONDS",
            help=f"lognormal median of {resolution} tasks (default: {seconds:g})",
        )
    group.add_argument(
        "--sigma",
        type=_non_negative,
        default=DEFAULT_SIGMA,
        metavar="S",
        help="lognormal sigma, the spread of log-durations (default: %(default)s)",
    )
    group.add_argument(
        "--rate-limit",
        type=_positive_int,
        metavar="N",
        help="at most N API requests in any one second; more get HTTP 429 with Retry-After (default: no limit)",
    )
    group.add_argument(
        "--max-concurrent",
        type=_positive_int,
        metavar="N",
        help="a submit while N tasks are generating is refused with code 429, nothing charged (default: no limit)",
    )


def emulator_from_args(args: argparse.Namespace) -> Emulator:
    """The Emulator the parsed command line asks for (not started); ValueError on a bad value."""
    emulator = Emulator(
        host=args.host,
        port=args.port,
        latency=args.latency,
        api_key=args.api_key,
        credits=args.credits,
        error_style=args.error_style,
        fail_words=tuple(args.fail_words or ("forbidden",)),
        files_base_url=args.files_base_url,
        verbose=args.verbose,
        message_key=args.message_key,
        unknown_task_id=args.unknown_task_id,
        relative_urls=args.relative_urls,
        wrong_extension=args.wrong_extension,
        file_content_type=args.file_content_type,
        trailing_bytes=args.trailing_bytes,
        unregistered_polls=args.unregistered_polls,
        failed_code=args.failed_code,
        rate_limit=args.rate_limit,
        max_concurrent=args.max_concurrent,
        reference_timeout=args.reference_timeout,
        reference_max_bytes=args.reference_max_bytes,
        durations=args.durations,
        medians=_medians(args),
        sigma=args.sigma,
        duration_seed=args.seed,
    )
    for spec in args.fault:
        fault, count = parse_fault(spec)
        emulator.inject(fault.phase, fault.kind, count, **fault.options)
    if not 0.0 <= args.random_faults <= 1.0:
        raise ValueError("--random-faults must be between 0 and 1")
    if args.random_faults:
        emulator.random_faults(args.random_faults, args.seed)
    return emulator


def _medians(args: argparse.Namespace) -> dict[str, float]:
    chosen = {}
    for resolution, default in DEFAULT_MEDIANS.items():
        own = getattr(args, f"median_{resolution.lower()}")
        chosen[resolution] = own if own is not None else args.median if args.median is not None else default
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        emulator = emulator_from_args(args)
    except ValueError as error:
        parser.error(str(error))

    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    try:
        emulator.start()
    except OSError as error:
        print(f"nanobanana-emulator: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(READY_LINE.format(url=emulator.base_url), flush=True)
    try:
        while not stop.wait(0.5):
            if args.parent_pid and not _alive(args.parent_pid):
                break
    finally:
        emulator.stop()
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be a whole number >= 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number >= 1")
    return value


if __name__ == "__main__":
    sys.exit(main())
