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
from ..runtime.provenance import EXPORT_FORMATS, SINCE_SYNTAX
from .kernel import stopped_waiting

if TYPE_CHECKING:
    from .magics import NanoBananaMagics

Command = Callable[["NanoBananaMagics", str], Any]
COMMANDS: dict[str, Command] = {}

SINCE_HELP = f"only tasks submitted since WHEN: {SINCE_SYNTAX}"


def command(name: str, epilog: str = "") -> Callable[[Callable], Command]:
    """Register `func(magics, args)` as `%nanobanana NAME`; its `@argument`s make the parser and help
    (`epilog`: examples shown at the end of `%nanobanana NAME --help`)."""

    def decorate(func: Callable) -> Command:
        func = kwds(formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog.strip("\n") or None)(func)
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


def cell_help_transformer(lines: list[str]) -> list[str]:
    """An IPython input transformer: `%%nanobanana --help` with an empty body becomes
    `%nanobanana help cell`, since IPython refuses a cell magic without a body before calling it."""
    if not lines or not lines[0].lstrip().startswith("%%nanobanana") or any(line.strip() for line in lines[1:]):
        return lines
    rest = lines[0].lstrip()[len("%%nanobanana") :]
    if rest[:1] not in ("", " ", "\t", "\n") or not _wants_help(rest):
        return lines
    return ["%nanobanana help cell\n"]


def _wants_help(rest: str) -> bool:
    try:
        words = shlex.split(rest)
    except ValueError:
        return False
    return any(word in ("-h", "--help") for word in words)


HELP_NOTES = f"""
Formats: history --format table|json|csv|markdown; export --format {"|".join(EXPORT_FORMATS)}
  (default: from PATH's suffix; imagefolder and webdataset write a dataset directory).
WHEN (--since): {SINCE_SYNTAX}.
%nanobanana help COMMAND, or %nanobanana COMMAND --help, explains one command with examples."""


@command("help")
@argument("topic", nargs="?", metavar="COMMAND", help="one command to explain (default: all)")
def cmd_help(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Usage of every command and option, or of one command."""
    from ..core.hints import hint_text
    from ..core.tables import help_text

    if args.topic in (None, "cell", "%%nanobanana"):
        if args.topic:
            print(magics.nanobanana_cell.parser.format_help())
            return
        print(help_text(magics.nanobanana_cell.parser.format_help(), COMMANDS, hint_text("settings")))
        print(HELP_NOTES)
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
    if not waited:
        magics.settle_background_outputs()
        print("no pending tasks in this kernel; nothing to wait for")
        return
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        for generation in waited:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not generation.join(remaining):
                break
    except KeyboardInterrupt:
        magics.settle_background_outputs()
        raise stopped_waiting(batch=len(waited) > 1) from None
    magics.settle_background_outputs()
    print(wait_summary(waited, args.timeout))


def wait_summary(waited: list, timeout: float | None) -> str:
    """`waited for 3 tasks: 2 done, 1 pending, 0 failed`, counting only the tasks waited for."""
    ended = [g for g in waited if g.done]
    failed = sum(1 for g in ended if g.status != "succeeded")
    still = len(waited) - len(ended)
    noun = "task" if len(waited) == 1 else "tasks"
    line = f"{len(ended) - failed} done, {still} pending, {failed} failed"
    if still:
        shown = f"{timeout:g} s" if timeout is not None else "the timeout"
        return (
            f"stopped waiting after {shown} for {len(waited)} {noun}: {line}; the pending ones go on (%nanobanana wait)"
        )
    return f"waited for {len(waited)} {noun}: {line}"


@command("status")
@argument("task_id", metavar="TASK_ID")
def cmd_status(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """One record-info call, shown readably."""
    from ..core.tables import task_status_bundle

    task_id = magics.session.resolve_task_id(args.task_id)
    try:
        status = magics.session.connection.record_info(task_id)
    except NanoBananaError as exc:
        raise exc.again(f"status of task {task_id}: {exc}", task_id=task_id) from exc
    display(task_status_bundle(status), raw=True)


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


@command(
    "history",
    epilog="""
Examples:
  %nanobanana history -n 5
  %nanobanana history --since 2h --format markdown
  %nanobanana history --format json -o records      (records: a list of dicts)
""",
)
@argument("-n", type=int, default=20, metavar="N", help="show the newest N (default 20; 0 = all)")
@argument(
    "--format",
    default="table",
    choices=["table", "json", "csv", "markdown"],
    help="table (default: text, and HTML with thumbnails in a notebook), json, csv or markdown "
    "(a rendered table in a notebook)",
)
@argument("--since", metavar="WHEN", help=SINCE_HELP)
@argument("-o", "--out", metavar="NAME", help="bind the records (list of dicts) to NAME")
def cmd_history(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """This directory's run log, newest first; pending tasks marked, full task ids."""
    from ..core.render import shown_path
    from ..core.tables import history_bundle, markdown_bundle
    from ..runtime import provenance
    from ..runtime.previews import cached_preview

    store = magics.session.store
    entries = list(reversed(provenance.read_entries(store, args.since)))
    if args.n:
        entries = entries[: args.n]
    if args.out:
        magics.user_ns[args.out] = [provenance.record(e, store) for e in entries]
    if args.format == "markdown":
        display(markdown_bundle(provenance.render(entries, store, "markdown")), raw=True)
        return
    if args.format != "table":
        print(provenance.render(entries, store, args.format), end="")
        return
    paths, thumbs = {}, {}
    for entry in entries:
        if entry.file and store.file_path(entry).is_file():
            paths[entry.task_id] = shown_path(store.file_path(entry))  # relative to the working directory
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


@command(
    "export",
    epilog="""
Examples:
  %nanobanana export provenance/generations.csv
  %nanobanana export --since 7d runs.jsonl
  %nanobanana export --format imagefolder dataset
  %nanobanana export --format webdataset shards

A batch's other columns (label, split, id, ...) go into every export; a `split`
column makes split folders. Load an imagefolder export with
  datasets.load_dataset("imagefolder", data_dir="dataset")
""",
)
@argument(
    "path",
    metavar="PATH",
    help="where to write: a file (.csv, .json, .jsonl, .md) or a dataset directory (with --format)",
)
@argument("--since", metavar="WHEN", help=SINCE_HELP)
@argument(
    "--format",
    choices=EXPORT_FORMATS,
    help="default: from PATH's suffix (or the export already at PATH). "
    "imagefolder: the images and a metadata.jsonl, load_dataset('imagefolder', data_dir=PATH) loads it; "
    "webdataset: tar shards of KEY.png + KEY.json. Both add a README.md dataset card, and exporting "
    "again adds only the new images",
)
def cmd_export(magics: NanoBananaMagics, args: argparse.Namespace) -> None:
    """Write the generations of this directory (request, metadata, times, file, sha256) to PATH: a file or a dataset."""
    from ..runtime import provenance

    session = magics.session
    entries = provenance.read_entries(session.store, args.since)
    print(provenance.export(args.path, entries, session.store, fmt=args.format, endpoint=session.settings.base_url))


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
