"""`%%nanobanana` and the `%nanobanana` dispatcher: the cell magic, and how a generation is shown."""

from __future__ import annotations

import argparse
import time
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, kwds, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import All, observe

from ..core.errors import InvalidRequestError
from ..core.params import PARAMETERS, GenerationRequest, Param
from ..session.session import Session
from .config import SettingsTraits
from .kernel import KernelBridge

# render, tables, batch, live, interpolate and the commands load on first use: %load_ext only registers.
if TYPE_CHECKING:
    from ..runtime.generation import Generation
    from .live import LiveOutput


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
        argument(
            "--wait",
            dest="wait",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="block until the image is ready (default: the wait setting, 'auto')",
        ),
        argument("--timeout", type=float, metavar="SECONDS", help="give up waiting after SECONDS (default 600)"),
        argument("--force", action="store_true", help="skip the cache: always submit a new task"),
        argument("--raw", action="store_true", help="no {expression} interpolation: the body is the prompt"),
        argument("--dry-run", action="store_true", help="show the JSON body that would be sent; send nothing"),
        argument(
            "--sweep",
            action="append",
            metavar="NAME=V1,V2",
            default=[],
            help="repeatable: run every combination of these values as a batch and show a grid; NAME is a "
            "parameter (aspect_ratio, resolution, ...) or a {variable} of the prompt; NAME=@list takes "
            "the values from a list in your namespace",
        ),
        argument("-c", "--concurrency", type=int, metavar="N", help="tasks pending at once in a sweep (default 4)"),
        argument("-h", "--help", action="store_true", help="show this help"),
    ]
    params = [argument(*p.flags, **_argparse_options(p)) for p in PARAMETERS if p.flags]
    for decorator in reversed(params + own):
        func = decorator(func)
    func = kwds(formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CELL_EPILOG)(func)
    return magic_arguments("%%nanobanana")(func)


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
class NanoBananaMagics(Magics, SettingsTraits):
    """Generate images with the NanoBanana API from a notebook. Settings: %config NanoBananaMagics"""

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.apply_environment()
        self.session = Session(self.settings())
        self.bridge = KernelBridge(shell)
        self.emulator: Any = None  # the EmulatorProcess `%nanobanana emulator start` made
        self.before_emulator: tuple | None = None
        self.unsettled: list[LiveOutput] = []  # background outputs that `%nanobanana wait` re-sends

    @property
    def user_ns(self) -> dict[str, Any]:
        """The user's namespace (where `-o` binds and `{expressions}` are read)."""
        assert self.shell is not None, "the magics run inside an IPython shell"
        return self.shell.user_ns

    @observe(All)
    def _settings_changed(self, change: Any) -> None:
        if "session" in self.__dict__:  # traits set before __init__ ends are read there
            self.session.update(self.settings())

    def close(self) -> None:
        """Stop background threads and the emulator this session started."""
        self.session.close()
        self.bridge.close()
        if self.emulator is not None:
            self.emulator.stop()

    # -- %%nanobanana --------------------------------------------------------------

    @cell_magic("nanobanana")  # type: ignore[arg-type]
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
            from ..core.tables import dry_run_bundle

            display(dry_run_bundle(request, self.base_url, self.api_key), raw=True)
            return
        generation = self.session.submit(request, force=args.force, timeout=args.timeout)
        if args.out:
            self.user_ns[args.out] = generation
        self.show(generation, wait=self.should_wait(args.wait), wait_timeout=None)

    def build_request(
        self, args: argparse.Namespace, cell: str, sweep: Mapping[str, Any] | None = None
    ) -> GenerationRequest:
        """Sweep values over flags over configured defaults, the interpolated body as prompt; validated, not sent."""
        from ..core.interpolate import interpolate

        sweep = sweep or {}
        prompt = cell.strip()
        if not args.raw:
            prompt = interpolate(prompt, ChainMap(dict(sweep), self.user_ns))
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
        from ..core.params import BY_NAME
        from ..core.render import combinations
        from ..core.sweep import parse_sweeps
        from ..core.tables import sweep_dry_run_bundle
        from ..runtime.batch import Row, plain
        from .live import LiveGrid, SweepCells
        from .progress import Progress

        axes = parse_sweeps(args.sweep, self.user_ns)
        combos = combinations(axes)
        requests = [self.build_request(args, cell, combo) for combo in combos]
        if args.dry_run:
            display(sweep_dry_run_bundle(combos, requests, dict(self.credit_costs)), raw=True)
            return
        # A prompt variable's value is no parameter of the request: keep it with the task (and its exports).
        rows = [
            Row(request, {k: plain(v) for k, v in combo.items() if k not in BY_NAME})
            for request, combo in zip(requests, combos)
        ]
        cells = SweepCells(axes, len(requests))
        bound: list[Generation | None] = [None] * len(requests)
        if args.out:
            self.user_ns[args.out] = bound  # filled in input order as tasks are submitted
        live = LiveGrid(cells, self.bridge) if self.bridge.in_kernel else None
        progress = Progress(len(requests), label="sweep", widget=self.bridge.in_kernel)

        def on_submit(index: int, generation: Generation) -> None:
            cells.set(index, generation)
            bound[index] = generation
            if live is not None:
                generation.add_listener(live.refresh)
                live.refresh(force=True)

        options = dict(
            force=args.force,
            timeout=args.timeout,
            concurrency=args.concurrency,
            on_submit=on_submit,
            on_progress=progress.update,
        )
        if live is not None and not self.should_wait(args.wait):
            self.session.start_many(rows, **options)
            return
        try:
            self.session.generate_many(rows, **options)
        finally:
            progress.finish()  # before the summary: no progress line is drawn after it
        if live is not None:
            live.refresh(force=True)
        else:
            print(cells.bundle()[0]["text/plain"])

    def should_wait(self, flag: bool | None) -> bool:
        """The flag, else the setting; "auto" blocks where nobody watches an output area update."""
        setting = self.wait if flag is None else flag
        if setting == "auto":
            return self.bridge.headless()
        return bool(setting)

    # -- showing a generation ------------------------------------------------------

    def show(self, generation: Generation, *, wait: bool, wait_timeout: float | None) -> None:
        """Put the generation in this cell's output; update it in place until it ends."""
        from ..core.hints import hint_text
        from ..core.render import status_text

        if not self.bridge.in_kernel:
            if wait or generation.done:
                self._show_in_terminal(generation, wait_timeout)
            else:
                print(f"{status_text(generation)}; {hint_text('wait', generation.task_id)}")
            return
        from .live import LiveOutput

        live = LiveOutput(generation, self.bridge, self.preview_max_px, self.preview_format, quiet_errors=wait)
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

    def _keep_unsettled(self, live: LiveOutput) -> None:
        # Only a headless client loses updates sent between cells (see settle_background_outputs).
        if self.bridge.headless():
            self.unsettled.append(live)

    def settle_background_outputs(self) -> None:
        """A headless client (nbclient) drops display updates that a worker sent between two cells;
        sending each ended state again from this cell puts it back in its own cell."""
        for live in [live for live in self.unsettled if live.generation.done]:
            live.settle(republish=True)
            self.unsettled.remove(live)

    def _show_in_terminal(self, generation: Generation, wait_timeout: float | None) -> None:
        from ..core.render import caption_lines, status_text
        from .live import generation_bundle
        from .progress import stopped_text

        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        try:
            while not generation.done and (deadline is None or time.monotonic() < deadline):
                print("\r" + status_text(generation), end="", flush=True)
                generation.join(0.5)
        except KeyboardInterrupt:
            print(f"\n{stopped_text()}")  # the words LiveOutput shows in a kernel
            raise
        print("\r" + " " * 100 + "\r", end="")
        if generation.status == "succeeded":
            text = generation_bundle(generation, 64, "jpeg")[0]["text/plain"]
            print(text if generation.notice else "\n".join(caption_lines(generation)))
        elif generation.exception is not None:
            raise generation.exception
        else:
            print(status_text(generation))

    # -- %nanobanana ---------------------------------------------------------------

    @line_magic("nanobanana")  # type: ignore[arg-type]
    def nanobanana_line(self, line: str) -> Any:
        """%nanobanana COMMAND ...: `%nanobanana help` lists the commands, `help COMMAND` explains one."""
        from .commands import COMMANDS

        command, _, rest = line.strip().partition(" ")
        if command in ("", "-h", "--help"):
            command = "help"
        handler = COMMANDS.get(command)
        if handler is None:
            raise InvalidRequestError(f"unknown command '{command}'; use one of {' '.join(COMMANDS)}")
        return handler(self, rest)
