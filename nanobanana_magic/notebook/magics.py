"""`%%nanobanana` and `%nanobanana`: the magics, their configuration and their commands."""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections import ChainMap
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Mapping

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, kwds, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import Bool, Dict, Enum, Float, Int, List, TraitError, TraitType, Unicode, Union
from traitlets.config import Configurable

from ..core.errors import InvalidRequestError, NanoBananaError
from .kernel import KernelBridge
from ..core.params import DEFAULT_BASE_URL, PARAMETERS, GenerationRequest, Param
from ..core.secret import ApiKey, as_key, mask
from ..session.session import Session

# display, views, batch, grid, provenance and interpolate load on first use: %load_ext only registers.
if TYPE_CHECKING:
    from ..runtime.generation import Generation
    from .live import LiveOutput

ENVIRONMENT = {"api_key": "NANOBANANA_API_KEY", "base_url": "NANOBANANA_BASE_URL",
               "output_dir": "NANOBANANA_OUTPUT_DIR"}


# -- traits -------------------------------------------------------------------

class ApiKeyTrait(TraitType):
    """Holds an `ApiKey`: strings are wrapped, so `%config` and reprs only ever show it masked."""

    default_value = None
    info_text = "an API key (shown masked)"

    def validate(self, obj: Any, value: Any) -> ApiKey | None:
        try:
            return as_key(value)
        except (TypeError, ValueError):
            self.error(obj, "<a value that is not a key>")


class ParamTrait(TraitType):
    """A configurable default for one request parameter, validated by that parameter."""

    def __init__(self, param: Param, **kwargs: Any) -> None:
        super().__init__(default_value=param.default, help=f"Default {param.label}: {param.help}.", **kwargs)
        self.param = param
        self.info_text = f"one of {' '.join(param.choices)}" if param.choices else param.kind

    def validate(self, obj: Any, value: Any) -> Any:
        try:
            return self.param.clean(value)
        except InvalidRequestError as exc:
            raise TraitError(str(exc)) from None


# Defaults of the configurable parameters, one trait per Param: a parameter added to
# PARAMETERS with configurable=True becomes a NanoBananaMagics setting with no change here.
ParameterDefaults = type("ParameterDefaults", (Configurable,), {
    p.name: ParamTrait(p).tag(config=True) for p in PARAMETERS if p.configurable})


# -- the flags of %%nanobanana, generated from PARAMETERS -----------------------------

def _argparse_options(param: Param) -> dict[str, Any]:
    options: dict[str, Any] = {"dest": param.name, "default": None, "help": param.help}
    if param.kind == "choice":
        options["metavar"] = "|".join(param.choices) if len(param.choices) <= 4 else "RATIO"
        options["help"] += f"; one of {' '.join(param.choices)} (default: %%config)"
    elif param.kind == "bool":
        options["action"] = argparse.BooleanOptionalAction
    elif param.kind == "urls":
        options.update(action="append", metavar="URL")
    else:
        options["metavar"] = "URL"
    return options


def generation_arguments(func: Callable) -> Callable:
    """Decorate the cell magic with one flag per parameter, then the magic's own flags."""
    own = [
        argument("-o", "--out", metavar="NAME", help="bind the Generation to NAME in the namespace at once"),
        argument("--wait", dest="wait", action=argparse.BooleanOptionalAction, default=None,
                 help="block until the image is ready (default: the wait setting, 'auto')"),
        argument("--timeout", type=float, metavar="SECONDS", help="give up waiting after SECONDS (default 600)"),
        argument("--force", action="store_true", help="skip the cache: always submit a new task"),
        argument("--raw", action="store_true", help="no {expression} interpolation: the body is the prompt"),
        argument("--dry-run", action="store_true", help="show the JSON body that would be sent; send nothing"),
        argument("--sweep", action="append", metavar="NAME=V1,V2", default=[],
                 help="repeatable: run every combination of these values as a batch and show a grid; NAME is a "
                      "parameter (aspect_ratio, resolution, ...) or a {variable} of the prompt; NAME=@list takes "
                      "the values from a list in your namespace"),
        argument("-c", "--concurrency", type=int, metavar="N", help="tasks pending at once in a sweep (default 4)"),
        argument("-h", "--help", action="store_true", help="show this help"),
    ]
    params = [argument(*p.flags, **_argparse_options(p)) for p in PARAMETERS if p.flags]
    for decorator in reversed(params + own):
        func = decorator(func)
    func = kwds(formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CELL_EPILOG)(func)
    return magic_arguments("%%nanobanana")(func)


def command(name: str) -> Callable:
    """Like `magic_arguments`, for a `%nanobanana NAME` subcommand (plain help formatting)."""
    def decorate(func: Callable) -> Callable:
        func = kwds(formatter_class=argparse.HelpFormatter)(func)
        return magic_arguments(f"%nanobanana {name}")(func)
    return decorate


CELL_EPILOG = """
The cell body is the prompt (whitespace around it removed). {expression} is
evaluated in your namespace; {{ and }} are literal braces; --raw turns this off.

Examples:
  %%nanobanana -a 16:9 -r 2K
  a watercolour map of {city} at dusk

  %%nanobanana -i https://example.org/cat.png -o cat --no-wait
  the same cat, as a banana
"""


@magics_class
class NanoBananaMagics(Magics, ParameterDefaults):
    """Generate images with the NanoBanana API from a notebook. Settings: %config NanoBananaMagics"""

    api_key = ApiKeyTrait(allow_none=True, help="API key (env NANOBANANA_API_KEY); never shown unmasked").tag(config=True)
    base_url = Unicode(DEFAULT_BASE_URL, help="API base URL (env NANOBANANA_BASE_URL)").tag(config=True)
    output_dir = Unicode("nanobanana_outputs", help="where images and runs.jsonl go (env NANOBANANA_OUTPUT_DIR)").tag(config=True)
    wait = Union([Enum(["auto"]), Bool()], default_value="auto",
                 help="block until done: 'auto' blocks in headless runs and terminals, True/False force it").tag(config=True)
    timeout = Float(600.0, help="seconds before a task is given up (it may still finish: fetch it)").tag(config=True)
    cache = Bool(True, help="answer a request equal to an earlier successful one from its saved file").tag(config=True)
    preview_max_px = Int(1024, min=64, help="longest side of the preview embedded in the notebook").tag(config=True)
    preview_format = Enum(["jpeg", "png"], "jpeg", help="format of the embedded preview").tag(config=True)
    short_errors = Bool(True, help="show this package's errors as one line (False: full traceback)").tag(config=True)
    poll_schedule = List([[60.0, 1.0], [180.0, 2.0], [1e9, 5.0]],
                         help="[[until_seconds, every_seconds], ...]: how often to ask for a task's status").tag(config=True)
    workers = Int(2, min=1, max=32, help="background threads that poll and download").tag(config=True)
    concurrency = Int(4, min=1, help="tasks pending at once in a sweep or batch").tag(config=True)
    credit_costs = Dict({}, help="credits per task by resolution, if known, e.g. {'1K': 4, '2K': 6, '4K': 12}: "
                                 "dry runs then say what a sweep costs").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._apply_environment()
        self.session = Session(self)
        self.bridge = KernelBridge(shell)
        self._emulator: Any = None
        self._before_emulator: tuple | None = None
        self._unsettled: list[LiveOutput] = []  # background outputs that `%nanobanana wait` re-sends

    def _apply_environment(self) -> None:
        # Precedence: defaults < ipython_config < environment < %config < flags.
        for trait, variable in ENVIRONMENT.items():
            value = os.environ.get(variable, "").strip()
            if value:
                setattr(self, trait, value)

    def close(self) -> None:
        """Stop background threads and the emulator this session started."""
        self.session.close()
        self.bridge.close()
        if self._emulator is not None:
            self._emulator.stop()

    # -- %%nanobanana --------------------------------------------------------------

    @cell_magic("nanobanana")
    @generation_arguments
    def nanobanana_cell(self, line: str, cell: str) -> None:
        """Generate an image from the cell body (the prompt)."""
        args = parse_argstring(self.nanobanana_cell, line)
        if args.help:
            print(self.nanobanana_cell.parser.format_help())
            return
        if args.sweep:
            self.run_sweep(args, cell)
            return
        request = self.build_request(args, cell)
        if args.dry_run:
            from ..core import views

            display(views.dry_run_bundle(request, self.base_url, self.api_key), raw=True)
            return
        generation = self.session.submit(request, force=args.force, timeout=args.timeout)
        if args.out:
            self.shell.user_ns[args.out] = generation
        self.show(generation, wait=self._should_wait(args.wait), wait_timeout=None)

    def build_request(self, args: argparse.Namespace, cell: str, sweep: Mapping[str, Any] | None = None) -> GenerationRequest:
        """Sweep values over flags over configured defaults, the interpolated body as prompt; validated, not sent."""
        from ..core.interpolate import interpolate

        sweep = sweep or {}
        prompt = cell.strip()
        if not args.raw:
            prompt = interpolate(prompt, ChainMap(dict(sweep), self.shell.user_ns))
        values = {}
        for param in PARAMETERS:
            if param.name == "prompt":
                continue
            flag_value = sweep.get(param.name, getattr(args, param.name, None))
            if flag_value is not None:
                values[param.name] = flag_value
            elif param.configurable:
                values[param.name] = getattr(self, param.name)
        return GenerationRequest(prompt=prompt, **values)

    def run_sweep(self, args: argparse.Namespace, cell: str) -> None:
        """Every combination of the --sweep values, as one batch, shown as a grid that fills in."""
        from ..core import views
        from ..runtime.batch import Progress, run_batch, submit_or_record_failure
        from ..core.grid import LiveGrid, SweepGrid, combinations
        from ..core.sweep import parse_sweeps

        axes = parse_sweeps(args.sweep, self.shell.user_ns)
        combos = combinations(axes)
        requests = [self.build_request(args, cell, combo) for combo in combos]
        if args.dry_run:
            display(views.sweep_dry_run_bundle(combos, requests, dict(self.credit_costs)), raw=True)
            return
        grid = SweepGrid(axes)
        bound: list[Generation | None] = [None] * len(requests)
        if args.out:
            self.shell.user_ns[args.out] = bound  # filled in input order as tasks are submitted
        live = LiveGrid(grid, self.bridge) if self.bridge.in_kernel else None
        progress = Progress(len(requests), label="sweep")

        def on_submit(index: int, generation: Generation) -> None:
            grid.set(index, generation)
            bound[index] = generation
            if live is not None:
                generation.add_listener(live.refresh)
                live.refresh(force=True)

        submit = submit_or_record_failure(lambda r: self.session.submit(r, force=args.force, timeout=args.timeout))
        batch = partial(run_batch, requests, submit, concurrency=args.concurrency or self.concurrency,
                        progress=progress, on_submit=on_submit)
        if live is not None and not self._should_wait(args.wait):
            threading.Thread(target=batch, name="nanobanana-sweep", daemon=True).start()
            return
        batch()
        if live is not None:
            live.refresh(force=True)
        else:
            print(grid.text())

    def _should_wait(self, flag: bool | None) -> bool:
        """The flag, else the setting; "auto" blocks where nobody watches an output area update."""
        setting = self.wait if flag is None else flag
        if setting == "auto":
            return self.bridge.headless()
        return bool(setting)

    # -- showing a generation ------------------------------------------------------

    def show(self, generation: Generation, *, wait: bool, wait_timeout: float | None) -> None:
        """Put the generation in this cell's output; update it in place until it ends."""
        from ..core.render import status_text

        if not self.bridge.in_kernel:
            if wait or generation.done:
                self._show_in_terminal(generation, wait_timeout)
            else:
                print(f"{status_text(generation)}; %nanobanana wait {generation.task_id} to block until it ends")
            return
        from .live import LiveOutput

        live = LiveOutput(generation, self.bridge, self.preview_max_px, self.preview_format,
                          quiet_errors=wait)
        if not wait:
            self._keep_unsettled(live)
            return
        try:
            generation.wait(wait_timeout)
        except KeyboardInterrupt:
            live.stopped_waiting()
            self._keep_unsettled(live)
            raise
        finally:
            live.settle(republish=False)

    def _keep_unsettled(self, live: "LiveOutput") -> None:
        # Only a headless client loses updates sent between cells (see _settle_background_outputs).
        if self.bridge.headless():
            self._unsettled.append(live)

    def _show_in_terminal(self, generation: Generation, wait_timeout: float | None) -> None:
        from ..core.render import caption_lines, status_text

        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        try:
            while not generation.done and (deadline is None or time.monotonic() < deadline):
                print("\r" + status_text(generation), end="", flush=True)
                generation.join(0.5)
        except KeyboardInterrupt:
            print(f"\nstopped waiting; task {generation.task_id} goes on (see %nanobanana history)")
            raise
        print("\r" + " " * 100 + "\r", end="")
        if generation.status == "succeeded":
            print("\n".join(caption_lines(generation)))
        elif generation.exception is not None:
            raise generation.exception
        else:
            print(status_text(generation))

    # -- %nanobanana ---------------------------------------------------------------

    @line_magic("nanobanana")
    def nanobanana_line(self, line: str) -> Any:
        """%nanobanana COMMAND ...: help, panel, wait, status, fetch, history, cancel, credits,
        config, login, emulator. `%nanobanana help` shows them all."""
        command, _, rest = line.strip().partition(" ")
        if command in ("", "-h", "--help"):
            command = "help"
        handler = COMMANDS.get(command)
        if handler is None:
            raise InvalidRequestError(f"unknown command '{command}'; use one of {' '.join(COMMANDS)}")
        return handler(self, rest)

    @command("help")
    def cmd_help(self, rest: str) -> None:
        """Usage of every command and option."""
        from ..core import views

        print(views.help_text(self.nanobanana_cell.parser.format_help(), COMMANDS))

    @command("panel")
    def cmd_panel(self, rest: str) -> Any:
        """Show the control panel (ipywidgets)."""
        from .control_panel import Panel

        panel = Panel(self)
        display(panel)
        return None

    @command("wait")
    @argument("task_ids", nargs="*", metavar="TASK_ID", help="tasks to wait for (default: all pending in this kernel)")
    @argument("--timeout", type=float, metavar="S", help="stop waiting after S seconds")
    def cmd_wait(self, rest: str) -> None:
        """Block until the named (default: all pending) tasks of this kernel end."""
        args = parse_argstring(self.cmd_wait, rest)
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        failures = []
        for generation in self.session.resolve(args.task_ids):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                generation.wait(remaining)
            except NanoBananaError as exc:
                failures.append(exc)
        self._settle_background_outputs()
        done = len(self.session.generations) - len(self.session.pending())
        print(f"{done} done, {len(self.session.pending())} pending, {len(failures)} failed")

    def _settle_background_outputs(self) -> None:
        # A headless client (nbclient) drops display updates that a worker sent between two
        # cells; sending each ended state again from this cell puts it back in its own cell.
        for live in [live for live in self._unsettled if live.generation.done]:
            live.settle(republish=True)
            self._unsettled.remove(live)

    @command("status")
    @argument("task_id", metavar="TASK_ID")
    def cmd_status(self, rest: str) -> None:
        """One record-info call, shown readably."""
        args = parse_argstring(self.cmd_status, rest)
        status = self.session.client.record_info(args.task_id)
        from ..core import views

        display(views.status_bundle(status), raw=True)

    @command("fetch")
    @argument("task_id", metavar="TASK_ID")
    @argument("-o", "--out", metavar="NAME", help="bind the Generation to NAME")
    @argument("--wait", dest="wait", action=argparse.BooleanOptionalAction, default=None,
              help="if the task is still running, block until it ends")
    def cmd_fetch(self, rest: str) -> None:
        """Show (and bind) a task's image: from the local store, else from the API. Never submits."""
        args = parse_argstring(self.cmd_fetch, rest)
        generation = self.session.fetch(args.task_id)
        if args.out:
            self.shell.user_ns[args.out] = generation
        if generation.status == "failed" and generation.exception is not None and not generation.url:
            raise generation.exception
        self.session.track(generation)
        self.show(generation, wait=not generation.done and self._should_wait(args.wait), wait_timeout=None)

    @command("history")
    @argument("-n", type=int, default=20, metavar="N", help="show the newest N (default 20; 0 = all)")
    @argument("--format", default="table", help="table (default), json, csv or markdown")
    @argument("--since", metavar="WHEN", help="only tasks submitted since WHEN: 30m, 2h, 7d, 2026-11-24, '2026-11-24 10:30'")
    @argument("-o", "--out", metavar="NAME", help="bind the records (list of dicts) to NAME")
    def cmd_history(self, rest: str) -> None:
        """This directory's run log, newest first; pending tasks marked."""
        from ..runtime import provenance; from ..core import views

        args = parse_argstring(self.cmd_history, rest)
        store = self.session.store
        since = provenance.parse_since(args.since) if args.since else None
        entries = list(reversed(provenance.select(store.entries(), since)))
        if args.n:
            entries = entries[: args.n]
        if args.out:
            self.shell.user_ns[args.out] = [provenance.record(e, store) for e in entries]
        if args.format == "table":
            display(views.history_bundle(entries, store), raw=True)
        else:
            print(provenance.render(entries, store, args.format), end="")

    @command("export")
    @argument("path", metavar="PATH", help="file to write: .json, .jsonl, .csv or .md")
    @argument("--since", metavar="WHEN", help="only tasks submitted since WHEN")
    def cmd_export(self, rest: str) -> None:
        """Write every generation of this directory (full request, times, status, file, sha256) to PATH."""
        from ..runtime import provenance

        args = parse_argstring(self.cmd_export, rest)
        store = self.session.store
        since = provenance.parse_since(args.since) if args.since else None
        entries = provenance.select(store.entries(), since)
        path = provenance.export(args.path, entries, store)
        print(f"wrote {len(entries)} generation(s) to {path}")

    @command("verify")
    def cmd_verify(self, rest: str) -> None:
        """Re-hash the saved files against the run log; report missing or altered ones."""
        from ..runtime import provenance

        checks = provenance.verify(self.session.store)
        bad = [c for c in checks if c.state != "ok"]
        for check in bad:
            print(f"{check.state:8} {check.entry.task_id}  {check.path}")
        print(f"{len(checks) - len(bad)} of {len(checks)} saved images match the run log"
              + (f"; {len(bad)} missing or altered" if bad else ""))
        if bad:
            raise NanoBananaError(f"{len(bad)} saved image(s) missing or altered; see the list above")

    @command("cancel")
    @argument("task_ids", nargs="*", metavar="TASK_ID", help="tasks to stop polling, or 'all'")
    def cmd_cancel(self, rest: str) -> None:
        """Stop polling locally (the API has no cancel); the task stays in the history."""
        args = parse_argstring(self.cmd_cancel, rest)
        ids = [] if args.task_ids in ([], ["all"]) else args.task_ids
        generations = self.session.resolve(ids)
        for generation in generations:
            generation.cancel()
        print(f"stopped polling {len(generations)} task(s); they stay in %nanobanana history and can be fetched")

    @command("credits")
    def cmd_credits(self, rest: str) -> None:
        """Remaining credit balance."""
        balance = self.session.client.credits()
        print(f"credits: {balance:g}")

    @command("config")
    def cmd_config(self, rest: str) -> None:
        """Effective configuration, key masked."""
        from ..core import views

        display(views.config_bundle(self._settings()), raw=True)

    def _settings(self) -> dict[str, Any]:
        names = [n for n in self.trait_names(config=True) if n not in ("parent", "config", "log")]
        settings = {}
        for name in sorted(names, key=lambda n: (n != "api_key", n)):
            value = getattr(self, name)
            settings[name] = mask(value.reveal()) if isinstance(value, ApiKey) else value
        return settings

    @command("login")
    def cmd_login(self, rest: str) -> None:
        """Ask for the key with a hidden prompt; kept for this session only."""
        from getpass import getpass

        key = getpass("NanoBanana API key (input hidden): ")
        if not key.strip():
            raise InvalidRequestError("no key entered; nothing changed")
        self.api_key = key
        print(f"key {mask(key.strip())} set for this session (not saved anywhere)")

    @command("emulator")
    @argument("action", choices=["start", "stop", "status"])
    @argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    @argument("--latency", type=float, default=3.0, help="seconds each task takes (default 3)")
    def cmd_emulator(self, rest: str) -> None:
        """Run the bundled emulator in the background and point this session at it."""
        from .emulator_process import EmulatorProcess

        args = parse_argstring(self.cmd_emulator, rest)
        if args.action == "start":
            if self._emulator is None or not self._emulator.alive:
                self._emulator = EmulatorProcess.start(port=args.port, latency=args.latency)
                self._before_emulator = (self.base_url, self.api_key)
            self.base_url = self._emulator.url
            if self.api_key is None:
                self.api_key = "emulator-local-key"
            print(f"emulator running at {self._emulator.url}; this session now talks to it "
                  f"(%nanobanana emulator stop to go back)")
        elif args.action == "stop":
            if self._emulator is not None:
                self._emulator.stop()
                self._emulator = None
                if self._before_emulator is not None:
                    self.base_url, self.api_key = self._before_emulator
            print(f"emulator stopped; base_url is {self.base_url}")
        else:
            running = self._emulator is not None and self._emulator.alive
            print(f"emulator {'running at ' + self._emulator.url if running else 'not running'}; "
                  f"base_url is {self.base_url}")


COMMANDS: dict[str, Callable[[NanoBananaMagics, str], Any]] = {
    "help": NanoBananaMagics.cmd_help,
    "panel": NanoBananaMagics.cmd_panel,
    "wait": NanoBananaMagics.cmd_wait,
    "status": NanoBananaMagics.cmd_status,
    "fetch": NanoBananaMagics.cmd_fetch,
    "history": NanoBananaMagics.cmd_history,
    "export": NanoBananaMagics.cmd_export,
    "verify": NanoBananaMagics.cmd_verify,
    "cancel": NanoBananaMagics.cmd_cancel,
    "credits": NanoBananaMagics.cmd_credits,
    "config": NanoBananaMagics.cmd_config,
    "login": NanoBananaMagics.cmd_login,
    "emulator": NanoBananaMagics.cmd_emulator,
}
