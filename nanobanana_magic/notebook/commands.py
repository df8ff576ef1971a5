"""The `%nanobanana COMMAND` subcommands, each registered by `@command` with its own parser and help."""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.magic_arguments import argument, kwds, magic_arguments, parse_argstring
from IPython.display import display

from ..core.errors import InvalidRequestError, NanoBananaError
from ..core.secret import ApiKey, mask
from .kernel import stopped_waiting

if TYPE_CHECKING:
    from .magics import NanoBananaMagics

Command = Callable[["NanoBananaMagics", str], Any]
COMMANDS: dict[str, Command] = {}

SINCE_HELP = "only tasks submitted since WHEN: 30m, 2h, 7d ago, or a date 2026-11-24 or '2026-11-24 10:30'"


def command(name: str) -> Callable[[Callable], Command]:
    """Register `func(magics, args)` as `%nanobanana NAME`; its `@argument`s make the parser and help."""

    def decorate(func: Callable) -> Command:
        func = kwds(formatter_class=argparse.RawDescriptionHelpFormatter)(func)
        func = magic_arguments(f"%nanobanana {name}")(func)
        parser = func.parser  # type: ignore[attr-defined]  # set by magic_arguments

        def run(magics: NanoBananaMagics, rest: str) -> Any:
            if _wants_help(rest):
                print(parser.format_help().rstrip())
                return None
            return func(magics, parse_argstring(func, rest))

        run.parser = parser  # type: ignore[attr-defined]
        run.__doc__ = func.__doc__
        COMMANDS[name] = run
        return run

    return decorate


def _wants_help(rest: str) -> bool:
    try:
        words = shlex.split(rest)
    except ValueError:
        return False
    return any(word in ("-h", "--help") for word in words)


@command("help")
@argument("topic", nargs="?", metavar="COMMAND", help="one command to explain (default: all)")
def cmd_help(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Usage of every command and option, or of one command."""
    from ..core.tables import help_text

    if args.topic in (None, "cell", "%%nanobanana"):
        if args.topic:
            print(magics.nanobanana_cell.parser.format_help())
            return
        print(help_text(magics.nanobanana_cell.parser.format_help(), COMMANDS))
        return
    handler = COMMANDS.get(args.topic)
    if handler is None:
        raise InvalidRequestError(f"no command '{args.topic}'; use one of {' '.join(COMMANDS)}")
    print(handler.parser.format_help().rstrip())  # type: ignore[attr-defined]


@command("panel")
def cmd_panel(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Show the control panel (ipywidgets)."""
    from .control_panel import Panel, PanelContext

    display(Panel(PanelContext.of(magics)))


@command("wait")
@argument("task_ids", nargs="*", metavar="TASK_ID", help="tasks to wait for (default: all pending in this kernel)")
@argument("--timeout", type=float, metavar="S", help="stop waiting after S seconds (the tasks go on)")
def cmd_wait(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Block until the named (default: all pending) tasks of this kernel end, updating their outputs."""
    waited = magics.session.resolve(args.task_ids)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        for generation in waited:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not generation.join(remaining):
                break
    except KeyboardInterrupt:
        magics.settle_background_outputs()
        raise stopped_waiting() from None
    magics.settle_background_outputs()
    ended = [g for g in waited if g.done]
    failed = sum(1 for g in ended if g.status != "succeeded")
    still = len(waited) - len(ended)
    line = f"{len(ended) - failed} done, {still} pending, {failed} failed"
    if still and args.timeout is not None:
        line += f" (stopped waiting after {args.timeout:g} s; the tasks go on)"
    print(line)


@command("status")
@argument("task_id", metavar="TASK_ID")
def cmd_status(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """One record-info call, shown readably."""
    from ..core.tables import task_status_bundle

    display(task_status_bundle(magics.session.connection.record_info(args.task_id)), raw=True)


@command("fetch")
@argument("task_id", metavar="TASK_ID")
@argument("-o", "--out", metavar="NAME", help="bind the Generation to NAME")
@argument(
    "--wait",
    dest="wait",
    action=argparse.BooleanOptionalAction,
    default=None,
    help="if the task is still running, block until it ends",
)
def cmd_fetch(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Show (and bind) a task's image: from the local store, else from the API. Never submits."""
    generation = magics.session.fetch(args.task_id)
    if args.out:
        magics.user_ns[args.out] = generation
    if generation.status == "failed" and generation.exception is not None and not generation.url:
        raise generation.exception
    magics.session.track(generation)
    magics.show(generation, wait=not generation.done and magics.should_wait(args.wait), wait_timeout=None)


@command("resume")
def cmd_resume(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Attach to every task of the run log still pending (a kernel died, a notebook closed); never submits."""
    from ..core.hints import with_hint

    generations = magics.session.resume()
    if not generations:
        print(f"no pending tasks in {magics.session.store.log_path}")
        return
    wait = magics.should_wait(None)
    print(f"resumed {len(generations)} pending task(s): {' '.join(g.task_id[:12] for g in generations)}")
    if not magics.bridge.in_kernel:
        for generation in generations:
            try:
                magics.show(generation, wait=wait, wait_timeout=None)
            except NanoBananaError as exc:
                print(f"{type(exc).__name__}: {with_hint(exc)}")
        return
    for generation in generations:
        magics.show(generation, wait=False, wait_timeout=None)
    if not wait:
        return
    try:
        for generation in generations:
            generation.join()
    except KeyboardInterrupt:  # the tasks go on, and stay pending in the run log
        magics.settle_background_outputs()
        raise stopped_waiting() from None
    magics.settle_background_outputs()


@command("history")
@argument("-n", type=int, default=20, metavar="N", help="show the newest N (default 20; 0 = all)")
@argument(
    "--format",
    default="table",
    choices=["table", "json", "csv", "markdown"],
    help="table (default), json, csv or markdown",
)
@argument("--since", metavar="WHEN", help=SINCE_HELP)
@argument("-o", "--out", metavar="NAME", help="bind the records (list of dicts) to NAME")
def cmd_history(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """This directory's run log, newest first; pending tasks marked, full task ids."""
    from ..core.tables import history_bundle
    from ..runtime import provenance
    from ..runtime.previews import cached_preview

    store = magics.session.store
    since = provenance.parse_since(args.since) if args.since else None
    entries = list(reversed(provenance.select(store.entries(), since)))
    if args.n:
        entries = entries[: args.n]
    if args.out:
        magics.user_ns[args.out] = [provenance.record(e, store) for e in entries]
    if args.format != "table":
        print(provenance.render(entries, store, args.format), end="")
        return
    paths, thumbs = {}, {}
    for entry in entries:
        if entry.file and store.file_path(entry).is_file():
            paths[entry.task_id] = str(store.file_path(entry))
            try:
                thumbs[entry.task_id] = cached_preview(store.file_path(entry), 96, "jpeg", quality=70)
            except (OSError, SyntaxError, ValueError):
                pass
    pending = store.pending_entries(younger_than=magics.timeout)
    untracked = [e for e in pending if e.task_id not in magics.session.generations]
    note = (
        f"{len(untracked)} task(s) still pending from another kernel or session: %nanobanana resume attaches to them"
        if untracked
        else ""
    )
    if store.damaged:
        damaged = f"{store.damaged} damaged line(s) of {store.log_path.name} were skipped"
        note = f"{note}; {damaged}" if note else damaged
    display(history_bundle(entries, str(store.output_dir), paths, thumbs, note), raw=True)


@command("export")
@argument("path", metavar="PATH", help="file to write: .json, .jsonl, .csv or .md")
@argument("--since", metavar="WHEN", help=SINCE_HELP)
def cmd_export(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Write every generation of this directory (full request, times, status, file, sha256) to PATH."""
    from ..runtime import provenance

    store = magics.session.store
    since = provenance.parse_since(args.since) if args.since else None
    entries = provenance.select(store.entries(), since)
    path = provenance.export(args.path, entries, store)
    print(f"wrote {len(entries)} generation(s) to {path}")


@command("verify")
def cmd_verify(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Re-hash the saved files against the run log; report missing or altered ones."""
    from ..runtime import provenance

    checks = provenance.verify(magics.session.store)
    bad = [c for c in checks if c.state != "ok"]
    for check in bad:
        print(f"{check.state:8} {check.entry.task_id}  {check.path}")
    print(
        f"{len(checks) - len(bad)} of {len(checks)} saved images match the run log"
        + (f"; {len(bad)} missing or altered" if bad else "")
    )
    if bad:
        raise NanoBananaError(f"{len(bad)} saved image(s) missing or altered; see the list above")


@command("cancel")
@argument("task_ids", nargs="*", metavar="TASK_ID", help="tasks to stop polling, or 'all'")
def cmd_cancel(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Stop polling locally (the API has no cancel); the task stays in the history."""
    ids = [] if args.task_ids in ([], ["all"]) else args.task_ids
    generations = magics.session.resolve(ids)
    for generation in generations:
        generation.cancel()
    print(f"stopped polling {len(generations)} task(s); they stay in %nanobanana history and can be fetched")


@command("credits")
def cmd_credits(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Remaining credit balance."""
    print(f"credits: {magics.session.connection.credits():g}")


@command("config")
def cmd_config(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Effective configuration, key masked."""
    from ..core.tables import config_bundle

    names = [n for n in magics.trait_names(config=True) if n not in ("parent", "config", "log")]
    settings = {}
    for name in sorted(names, key=lambda n: (n != "api_key", n)):
        value = getattr(magics, name)
        settings[name] = mask(value.reveal()) if isinstance(value, ApiKey) else value
    display(config_bundle(settings), raw=True)


@command("login")
def cmd_login(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Ask for the key with a hidden prompt; kept for this session only."""
    from getpass import getpass

    from IPython.core.error import StdinNotImplementedError

    try:
        key = getpass("NanoBanana API key (input hidden): ")
    except StdinNotImplementedError:
        raise InvalidRequestError(
            "%nanobanana login needs a frontend that can ask for input; in a headless run "
            "set NANOBANANA_API_KEY (or %config NanoBananaMagics.api_key)"
        ) from None
    if not key.strip():
        raise InvalidRequestError("no key entered; nothing changed")
    magics.api_key = key
    print(f"key {mask(key.strip())} set for this session (not saved anywhere)")


@command("emulator")
@argument("action", choices=["start", "stop", "status"])
@argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
@argument("--latency", type=float, default=3.0, help="seconds each task takes (default 3)")
def cmd_emulator(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Run the bundled emulator in the background and point this session at it."""
    from .emulator_process import EmulatorProcess

    if args.action == "start":
        if magics.emulator is None or not magics.emulator.alive:
            magics.emulator = EmulatorProcess.start(port=args.port, latency=args.latency)
            magics.before_emulator = (magics.base_url, magics.api_key)
        magics.base_url = magics.emulator.url
        if magics.api_key is None:
            magics.api_key = "emulator-local-key"
        print(
            f"emulator running at {magics.emulator.url}; this session now talks to it "
            f"(%nanobanana emulator stop to go back)"
        )
    elif args.action == "stop":
        if magics.emulator is not None:
            magics.emulator.stop()
            magics.emulator = None
            if magics.before_emulator is not None:
                magics.base_url, magics.api_key = magics.before_emulator
        print(f"emulator stopped; base_url is {magics.base_url}")
    else:
        running = magics.emulator is not None and magics.emulator.alive
        print(
            f"emulator {'running at ' + magics.emulator.url if running else 'not running'}; "
            f"base_url is {magics.base_url}"
        )
