"""`%%nanobanana` and the `%nanobanana` dispatcher: the cell magic, and how a generation is shown."""

from __future__ import annotations

import argparse
import builtins
import keyword
import time
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, kwds, magic_arguments
from IPython.display import display
from traitlets import All, observe

from ..core.errors import InvalidRequestError
from ..core.params import PARAMETERS, GenerationRequest, Param
from ..session.session import Session
from .config import SettingsTraits
from .kernel import KernelBridge, stopped_waiting

# render, tables, batch, live, interpolate and the commands load on first use: %load_ext only registers.
if TYPE_CHECKING:
    from ..runtime.generation import Generation
    from .live import LiveOutput


# -- the flags of %%nanobanana, generated from PARAMETERS -----------------------------

IMAGE_HELP = (
    "reference image, repeatable, at most 14 in all: an http(s) URL, a local PNG/JPEG/WebP file, or @NAME "
    "(a Generation, a PIL image, a Path, a URL, or a list of these); files and older results are uploaded "
    "to upload_to"
)


def _argparse_options(param: Param) -> dict[str, Any]:
    options: dict[str, Any] = {"dest": param.name, "default": None, "help": param.help}
    if param.kind == "choice":
        options["metavar"] = "|".join(param.choices) if len(param.choices) <= 4 else "RATIO"
        options["help"] += f"; one of {' '.join(param.choices)} (default: %%config)"
    elif param.kind == "bool":
        options["action"] = argparse.BooleanOptionalAction
    elif param.kind == "urls":
        options.update(action="append", metavar="SOURCE", help=IMAGE_HELP)
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


def check_out_name(name: str | None) -> None:
    """`-o NAME` must be a name Python code can use afterwards (checked before anything is sent)."""
    if name is not None and (not name.isidentifier() or keyword.iskeyword(name)):
        why = "is a Python keyword" if keyword.iskeyword(name) else "is not a Python name"
        raise InvalidRequestError(
            f"-o '{name[:40]}' {why}; use a name such as result (letters, digits and _, not starting with a digit)"
        )


# -- the flag line, expanded by the magic itself ----------------------------------------


def split_flags(line: str) -> list[str]:
    """The words of a flag line, as a shell splits them (quotes group and are removed), except that
    a `{expression}` is kept whole and verbatim, spaces and quotes included."""
    words: list[str] = []
    word: list[str] = []
    started = False  # a word has begun (so "" is an empty word)
    quote = ""  # the quote open outside any expression
    i, n = 0, len(line)
    while i < n:
        char = line[i]
        if char == "{" and not line.startswith("{{", i):
            end = _expression_end(line, i)
            word.append(line[i : end + 1])
            started, i = True, end + 1
            continue
        if char in "{}" and line.startswith(char * 2, i):
            word.append(char * 2)  # a literal brace, left for interpolation to turn into one
            started, i = True, i + 2
            continue
        if quote:
            if char == quote:
                quote = ""
            else:
                word.append(char)
        elif char in "'\"":
            quote, started = char, True
        elif char.isspace():
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(char)
            started = True
        i += 1
    if quote:
        raise InvalidRequestError(f"unclosed {quote} in the flags; close it, or remove it")
    if started:
        words.append("".join(word))
    return words


def _expression_end(text: str, start: int) -> int:
    """The index of the `}` closing the expression that opens at `start` (strings and brackets skipped)."""
    depth, quote, i = 0, "", start
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
            if depth == 0 and char == "}":
                return i
            if depth <= 0:
                break  # `{a)`: brackets that do not match
        i += 1
    near = text[start : start + 30]
    raise InvalidRequestError(f"unclosed '{{' in the flags near {near!r}; use {{{{ }}}} for a literal brace")


def expand_flag_value(word: str, namespace: Mapping[str, Any], objects: dict[str, Any]) -> str:
    """`word` with its `{expression}`s evaluated in `namespace`.

    A word that is one expression whose value is not text or a number stays as written and its
    value goes into `objects` (keyed by the word): `-i {result}` passes the Generation itself."""
    if "{" not in word and "}" not in word:
        return word
    if word.startswith("{") and not word.startswith("{{") and _expression_end(word, 0) == len(word) - 1:
        expression = word[1:-1]
        try:
            code = compile(expression.strip(), "<flag>", "eval")
        except SyntaxError:
            code = None  # maybe a format spec ({x:.2f}) or a conversion ({x!r}): interpolation has those
        if code is not None:
            value = _evaluate_flag(code, expression, word, namespace)
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            objects[word] = value
            return word
    from ..core.interpolate import interpolate

    try:
        return interpolate(word, namespace)
    except InvalidRequestError as exc:  # its words are about the prompt; say where this one is
        message = str(exc).replace(" in the prompt", f" in the flag value '{_short(word)}'").replace(", or --raw", "")
        raise InvalidRequestError(message) from None


def _evaluate_flag(code: Any, expression: str, word: str, namespace: Mapping[str, Any]) -> Any:
    try:
        return eval(code, {"__builtins__": builtins}, namespace)
    except NameError as exc:
        name = getattr(exc, "name", None) or str(exc)
        raise InvalidRequestError(
            f"name '{name}' is not defined in the flag value '{_short(word)}'; define it first, "
            "or use {{ }} for literal braces"
        ) from None
    except Exception as exc:
        raise InvalidRequestError(
            f"{{{_short(expression.strip())}}} in the flags raised {type(exc).__name__}: {_short(str(exc))}"
        ) from None


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


CELL_EPILOG = """
The cell body is the prompt (whitespace around it removed). {expression} is
evaluated in your namespace; {{ and }} are literal braces; --raw turns this off.
Flag values take {expression} too (not $name); -i {obj} and -i @NAME pass the
object itself: a Generation, a PIL image, a Path, or a list of these.

Examples:
  %%nanobanana -a 16:9 -r 2K
  a watercolour map of {city} at dusk

  %%nanobanana -i https://example.org/cat.png -o cat --no-wait
  the same cat, as a banana

  %%nanobanana -i @cat -i photos/hat.jpg
  the cat from image 1 wearing the hat from image 2
"""


@magics_class
class NanoBananaMagics(Magics, SettingsTraits):
    """Generate images with the NanoBanana API from a notebook. Settings: %config NanoBananaMagics"""

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.apply_environment()
        self.session = Session(self.settings())
        self.session.spending.start(self.max_credits)
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
    @no_var_expand  # the flags are expanded here, so an object given as {expr} or @NAME stays an object
    @generation_arguments
    def nanobanana_cell(self, line: str, cell: str) -> None:
        """Generate an image from the cell body (the prompt)."""
        args = self.parse_flags(line)
        if args.help:
            print(self.nanobanana_cell.parser.format_help())
            return
        check_out_name(args.out)
        if args.sweep:
            self.run_sweep(args, cell)
            return
        request = self.build_request(args, cell)
        sources = args.image_urls or []
        if args.dry_run:
            self.show_dry_run(request, sources)
            return
        generation = self.session.submit_sources(
            request, sources, namespace=self.user_ns, force=args.force, timeout=args.timeout
        )
        if args.out:
            self.user_ns[args.out] = generation
        self.show(generation, wait=self.should_wait(args.wait), wait_timeout=None)

    def parse_flags(self, line: str) -> argparse.Namespace:
        """The flags of the raw (unexpanded) line: `{expr}` in a value is evaluated in the user namespace;
        a whole-value `{expr}` of `-i` keeps its object (a Generation, an image, a list)."""
        objects: dict[str, Any] = {}
        argv = [expand_flag_value(token, self.user_ns, objects) for token in split_flags(line)]
        args: argparse.Namespace = self.nanobanana_cell.parser.parse_args(argv)
        for name, value in vars(args).items():
            if name == "image_urls" and value:
                args.image_urls = [objects.get(v, v) if isinstance(v, str) else v for v in value]
            elif isinstance(value, str) and value in objects:
                setattr(args, name, format(objects[value]))
            elif isinstance(value, list):
                setattr(args, name, [format(objects[v]) if isinstance(v, str) and v in objects else v for v in value])
        return args

    def show_dry_run(self, request: GenerationRequest, sources: list[Any]) -> None:
        """The body that would be sent, the references checked (nothing uploaded, nothing sent)."""
        from ..core.tables import dry_run_bundle
        from ..session.sources import PLANNED, PlannedUploads, with_references

        refs = self.session.references_for(sources, self.user_ns, upload=False) if sources else []
        planner = PlannedUploads(self.session.settings)
        shown = [
            {
                "source": r.source,
                "sha256": r.sha256,
                "url": planner.describe(r.url) if r.url.startswith(PLANNED) else r.url,
            }
            for r in refs
        ]
        body_request = with_references(request, refs) if refs else request
        cost = self.session.cost_note([request])
        display(dry_run_bundle(body_request, self.base_url, self.api_key, references=shown, cost_note=cost), raw=True)

    def build_request(
        self, args: argparse.Namespace, cell: str, sweep: Mapping[str, Any] | None = None
    ) -> GenerationRequest:
        """Sweep values over flags over configured defaults, the interpolated body as prompt; validated, not sent.

        The reference images (`-i`) are not in it: `Session.submit_sources` resolves them."""
        from ..core.interpolate import interpolate

        sweep = sweep or {}
        prompt = cell.strip()
        if not args.raw:
            prompt = interpolate(prompt, ChainMap(dict(sweep), self.user_ns))
        values = {}
        for param in PARAMETERS:
            if param.name == "prompt" or param.kind == "urls":  # reference sources are resolved apart
                continue
            flag_value = sweep.get(param.name, getattr(args, param.name, None))
            if flag_value is not None:
                values[param.name] = flag_value
            elif param.configurable:
                values[param.name] = getattr(self, param.name)
        return GenerationRequest(prompt=prompt, **values)

    def run_sweep(self, args: argparse.Namespace, cell: str) -> None:
        """Every combination of the --sweep values, as one batch, shown as a grid that fills in."""
        from ..core.interpolate import template_names
        from ..core.params import BY_NAME
        from ..core.render import combinations
        from ..core.sweep import parse_sweeps
        from ..core.tables import sweep_dry_run_bundle
        from ..runtime.batch import Row, plain
        from .live import LiveGrid, SweepCells
        from .progress import Progress

        variables = set() if args.raw else template_names(cell.strip())
        axes = parse_sweeps(args.sweep, self.user_ns, variables)
        combos = combinations(axes)
        requests = [self.build_request(args, cell, combo) for combo in combos]
        sources = args.image_urls or []
        if args.dry_run:
            if sources:  # checked, not uploaded
                self.session.references_for(sources, self.user_ns, upload=False)
            display(sweep_dry_run_bundle(combos, requests, self.session.cost_note(requests)), raw=True)
            return
        # One set of references for every combination: uploaded once, identified by content in each key.
        references = self.session.references_for(sources, self.user_ns) if sources else []
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
            references=references,
        )
        if live is not None and not self.should_wait(args.wait):
            self.session.check_budget(requests, force=args.force)  # here: a sweep's own thread has no cell to fail
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
            raise stopped_waiting() from None
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

        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        try:
            while not generation.done and (deadline is None or time.monotonic() < deadline):
                print("\r" + status_text(generation), end="", flush=True)
                generation.join(0.5)
        except KeyboardInterrupt:
            print()  # end the status line; the one line that follows says what LiveOutput says in a kernel
            raise stopped_waiting() from None
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
