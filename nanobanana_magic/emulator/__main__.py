"""Command line: ``python -m nanobanana_magic.emulator`` / ``nanobanana-emulator``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Sequence

from .faults import DESCRIPTIONS, KINDS, PHASES, parse_fault
from .server import Emulator
from .tasks import COSTS

READY_LINE = "NanoBanana emulator listening on {url}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; its help documents every knob."""
    kind_lines = []
    for kind, (phases, options) in KINDS.items():
        where = "any phase" if len(phases) == len(PHASES) else "/".join(phases)
        defaults = ", ".join(f"{name}={'unset' if value is None else value}" for name, value in options.items())
        kind_lines.append(f"  {kind:<11} {DESCRIPTIONS[kind]}")
        kind_lines.append(f"  {'':<11} [{where}]" + (f" options: {defaults}" if defaults else ""))
    parser = argparse.ArgumentParser(
        prog="nanobanana-emulator",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Serve a local, faithful fake of the NanoBanana REST API (generate-2, record-info,\n"
            "credit) with Pillow-drawn results, callbacks and fault injection. When ready it prints\n"
            f"  {READY_LINE.format(url='http://HOST:PORT')}\n"
            "and serves until Ctrl-C or SIGTERM."
        ),
        epilog="\n".join([
            f"fault phases: {', '.join(PHASES)}",
            "fault kinds (and their options with defaults):",
            *kind_lines,
            f"credits per task: {', '.join(f'{res}={cost}' for res, cost in COSTS.items())}",
            "sample reference images: /samples/banana.png, /samples/cat.png, /samples/landscape.png",
        ]),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--latency", type=_non_negative, default=2.0, metavar="SECONDS",
                        help="seconds from submit until a task ends (default: %(default)s)")
    parser.add_argument("--api-key", metavar="KEY",
                        help="the only bearer key accepted (default: any non-empty key); never printed")
    parser.add_argument("--credits", type=int, default=1000, metavar="N",
                        help="starting credit balance (default: %(default)s)")
    parser.add_argument("--error-style", choices=("json", "http"), default="json",
                        help="json: errors as HTTP 200 with a JSON code; http: the code is the HTTP status "
                             "(default: %(default)s)")
    parser.add_argument("--fail-word", action="append", metavar="WORD", dest="fail_words",
                        help="a prompt containing WORD (case-insensitive) fails with successFlag 3; "
                             "repeatable (default: forbidden)")
    parser.add_argument("--fault", action="append", default=[], metavar="PHASE:KIND[:COUNT][:key=value,...]",
                        help="queue a fault for the next COUNT (default 1) requests of PHASE; repeatable, "
                             "e.g. submit:status:2:status=429,retry_after=1")
    parser.add_argument("--random-faults", type=float, default=0.0, metavar="RATE",
                        help="give each API request a random realistic fault with probability RATE, 0..1 "
                             "(default: %(default)s = off)")
    parser.add_argument("--seed", type=int, default=1234, metavar="N",
                        help="seed of the random faults, for replayable runs (default: %(default)s)")
    parser.add_argument("--files-base-url", metavar="URL",
                        help="base of result URLs, {port} is replaced by the bound port, e.g. "
                             "http://localhost:{port} (default: this server's own URL)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr (keys are never logged)")
    parser.add_argument("--parent-pid", type=int, metavar="PID",
                        help="stop when process PID ends (a notebook that started the emulator, say)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        faults = [parse_fault(spec) for spec in args.fault]
    except ValueError as error:
        parser.error(str(error))
    if not 0.0 <= args.random_faults <= 1.0:
        parser.error("--random-faults must be between 0 and 1")
    emulator = Emulator(
        host=args.host, port=args.port, latency=args.latency, api_key=args.api_key, credits=args.credits,
        error_style=args.error_style, fail_words=tuple(args.fail_words or ("forbidden",)),
        files_base_url=args.files_base_url, verbose=args.verbose,
    )
    for fault, count in faults:
        emulator.inject(fault.phase, fault.kind, count, **fault.options)
    if args.random_faults:
        emulator.random_faults(args.random_faults, args.seed)

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


if __name__ == "__main__":
    sys.exit(main())
