"""The control panel: ipywidgets over the same parameters, validation and session as `%%nanobanana`.

Every control is derived from `params.PARAMETERS`, values are checked with `Param.clean` and
`GenerationRequest`, and Generate goes through `Session.submit`: one code path. Worker
threads update the widgets from `Generation.add_listener` callbacks by setting traits (never
`with output:`), so the kernel stays free while tasks run.
"""

from __future__ import annotations

import dataclasses
import html
import re
import shlex
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..core import params
from ..core.errors import InvalidRequestError, NanoBananaError, TaskTimeoutError
from ..core.hints import with_hint
from ..core.render import caption_lines
from .panel_gallery import Tile
from .panel_references import REFERENCE_FILES, ReferenceHooks, ReferenceList
from .panel_widgets import (
    MUTED_STYLE,
    Field,
    message_html,
    param_problem,
    set_visible,
    simple_field,
    widget_format,
)

if TYPE_CHECKING:
    from ..runtime.generation import Generation
    from ..session.session import Session


def _cell_source(source: Any) -> str:
    """How `-i` names a panel reference: its text, a kept file's path, a result's saved file."""
    if isinstance(source, str):
        return source
    path = getattr(source, "path", source)  # a Generation: its saved file is the same image by content
    return str(path)


@dataclasses.dataclass(frozen=True)
class PanelContext:
    """What the panel reads of its kernel: the session, and the settings as the panel opens."""

    session: Session
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # configured parameter defaults
    preview_max_px: int = 1024
    preview_format: str = "jpeg"
    namespace: Mapping[str, Any] | None = None  # where a reference row's @NAME is looked up

    @classmethod
    def of(cls, magics: Any) -> PanelContext:
        """The context of a loaded `NanoBananaMagics`."""
        defaults = {p.name: getattr(magics, p.name) for p in params.PARAMETERS if p.configurable}
        return cls(magics.session, defaults, magics.preview_max_px, magics.preview_format, magics.user_ns)

    def reference_hooks(self) -> ReferenceHooks:
        """Checks with -i's rules (nothing uploaded), thumbnails, and where picked files are kept."""
        session = self.session

        def check(sources: list[Any]) -> None:
            session.references_for(sources, self.namespace, upload=False)

        def keep(name: str, data: bytes) -> Path:
            import hashlib

            folder = session.store.output_dir / REFERENCE_FILES
            folder.mkdir(parents=True, exist_ok=True)
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem)[:60] or "image"
            suffix = re.sub(r"[^A-Za-z0-9.]", "", Path(name).suffix)[:8].lower()
            path = folder / f"{stem}-{hashlib.sha256(data).hexdigest()[:12]}{suffix}"
            path.write_bytes(data)
            return path

        return ReferenceHooks(check=check, fetch=lambda url: session.connection.download(url), keep=keep)


class Panel(W.VBox):
    """The control panel of one kernel: `nanobanana_magic.panel()`, or `%nanobanana panel`.

    `results` lists the generations shown, newest first (`panel.results[0].path`, `.request`).
    """

    def __init__(self, context: PanelContext) -> None:
        super().__init__(
            layout=W.Layout(padding="10px 14px", max_width="1000px", border="1px solid var(--jp-border-color1,#ccc)")
        )
        self.context = context
        self.results: list[Generation] = []
        self.selected: Generation | None = None  # the one shown full size
        self._tiles: dict[int, Tile] = {}
        self._lock = threading.RLock()  # guards results, _tiles, the gallery, _submitting, _last_error
        self._submitting, self._credits_call = 0, 0
        self._last_error: Exception | None = None
        self._touched = False  # no "prompt is empty" before anyone typed
        self._build()
        for generation in context.session.generations.values():  # this session's earlier results
            self._add(generation)
        self._validate()
        self._refresh_status()
        self._refresh_credits()

    # -- layout ------------------------------------------------------------------------

    def _build(self) -> None:
        self.fields: list[Any] = []
        grid, urls = [], []
        for param in params.PARAMETERS:
            if param.kind == "text":
                field: Any = self._prompt_field(param)
            elif param.kind == "urls":
                field = self.references = ReferenceList(param, self._default(param), self.context.reference_hooks())
                urls.append(field.box)
            else:
                field = simple_field(param, self._default(param))
                grid.append(field)
            field.observe(self._validate)
            self.fields.append(field)
        self.generate = W.Button(
            description="Generate", button_style="primary", icon="magic", layout=W.Layout(width="160px")
        )
        self.generate.on_click(self._on_generate)
        self.force = W.Checkbox(
            description="Skip cache (--force)",
            indent=False,
            layout=W.Layout(width="180px"),
            tooltip="submit a new task even if an equal request already succeeded",
        )
        self.force.observe(lambda change: self._validate(), names="value")
        self.copy = W.ToggleButton(
            description="Copy as cell", icon="clipboard", tooltip="the %%nanobanana cell that makes this request"
        )
        self.cell = W.Textarea(rows=4, layout=W.Layout(width="100%", display="none"))
        self.copy.observe(lambda change: set_visible(self.cell, change["new"]), names="value")
        self.status, self.credits = W.HTML(), W.HTML(message_html("credits: …", MUTED_STYLE))
        self.gallery = W.Box(layout=W.Layout(display="flex", flex_flow="row wrap", align_items="flex-start"))
        self.preview_image = W.Image(
            format="jpeg",
            layout=W.Layout(max_width="100%", max_height="560px", width="auto", height="auto", object_fit="contain"),
        )
        self.preview_caption = W.HTML()
        close = W.Button(description="Close", icon="times")
        close.on_click(lambda _: set_visible(self.preview, False))
        self.preview: W.VBox = W.VBox(
            [self.preview_image, self.preview_caption, close], layout=W.Layout(display="none", margin="0 0 10px")
        )
        title = W.HTML(
            "<span style='font-size:17px;font-weight:600'><span style='color:#f2c200'>●</span>"
            " NanoBanana</span>"
            f" <span style='{MUTED_STYLE}'>image generation · the options of %%nanobanana</span>"
        )
        grid.sort(key=lambda f: {"choice": 0, "bool": 1}.get(f.param.kind, 2))  # choices, switches, then text
        grid_layout = W.Layout(grid_template_columns="repeat(3, minmax(0, 1fr))", grid_gap="2px 12px", margin="6px 0")
        for widget, name in (
            (self, "panel"),
            (self.generate, "generate"),
            (self.gallery, "gallery"),
            (self.preview, "preview"),
            (self.status, "status"),
        ):
            widget.add_class(f"nanobanana-{name}")  # stable hooks for browser tests and user CSS
        self.children = [
            W.HBox([title, self.credits], layout=W.Layout(justify_content="space-between", align_items="center")),
            self.prompt.box,
            W.GridBox([f.box for f in grid], layout=grid_layout),
            *urls,
            W.HBox([self.generate, self.force, self.copy], layout=W.Layout(align_items="center", margin="10px 0 2px")),
            self.cell,
            self.status,
            W.HTML(f"<b>Results</b> <span style='{MUTED_STYLE}'>newest first · panel.results[i] in code</span>"),
            self.preview,
            self.gallery,
        ]

    def _prompt_field(self, param: params.Param) -> Field:
        area = W.Textarea(placeholder=f"What to draw… ({param.help})", rows=3, layout=W.Layout(width="100%"))
        area.observe(lambda change: setattr(self, "_touched", True), names="value")
        self.prompt, self.counter = Field(param, area, lambda: area.value.strip()), W.HTML()
        self.prompt.error.layout.margin = "0"
        self.prompt.box.children = (
            area,
            W.HBox([self.prompt.error, self.counter], layout=W.Layout(justify_content="space-between")),
        )
        return self.prompt

    def __repr__(self) -> str:  # the text/plain of a saved notebook, where widgets do not render
        with self._lock:
            done = sum(g.status == "succeeded" for g in self.results)
        return f"<NanoBanana control panel: {len(self.results)} result(s), {done} succeeded; panel.results>"

    def _default(self, param: params.Param) -> Any:
        """The configured default (the NanoBananaMagics trait) of a configurable param, else the definition's."""
        if param.name in self.context.defaults:
            return self.context.defaults[param.name]
        return param.default

    def field(self, name: str) -> Any:
        """The control of the parameter `name` (None if there is none)."""
        return next((f for f in self.fields if f.param.name == name), None)

    # -- validation and the cell text ----------------------------------------------------

    def values(self) -> dict[str, Any]:
        """Parameter name → the value entered (not yet validated)."""
        return {f.param.name: f.value for f in self.fields}

    def _validate(self) -> params.GenerationRequest | None:
        """Mark each field with the magic's message; the request (without its reference images,
        which Generate resolves as `-i` does) when everything is valid."""
        problems = []
        for field in self.fields:
            problem = field.problem() if field is self.references else param_problem(field.param, field.value)
            field.mark(None if field is self.prompt and not (self._touched or field.value) else problem)
            problems += [problem] if problem else []
        request = None
        if not problems:
            try:
                # The reference images are checked above by -i's rules; Generate resolves (uploads) them.
                values = {k: v for k, v in self.values().items() if k != self.references.param.name}
                request = params.GenerationRequest(**values)
            except InvalidRequestError as exc:
                problems.append(str(exc))
        left = params.MAX_PROMPT_CHARS - len(self.prompt.value)
        self.counter.value = (
            message_html(f"{left:,} characters left", MUTED_STYLE)
            if left >= 0
            else message_html(f"{-left:,} characters over the limit")
        )
        self.generate.disabled = request is None
        self.generate.tooltip = problems[0] if problems else "submit this request"
        self.cell.value = self.cell_text()
        return request

    def cell_text(self) -> str:
        """The `%%nanobanana` cell that makes the same request: flags only where not the default."""
        flags = []
        for field in self.fields:
            param = field.param
            if field is self.prompt or not param.flag:
                continue
            try:
                value = param.clean(field.value) if param.kind != "urls" else None
            except InvalidRequestError:
                value = field.value
            if param.kind == "urls":
                flags += [f"{param.flag} {shlex.quote(_cell_source(source))}" for source in field.value]
            elif value == param.default and value == self._default(param):
                continue  # equal to both: the cell needs no flag here, nor in a kernel configured otherwise
            elif param.kind == "bool":
                flags.append(param.flag if value else "--no-" + param.flag[2:])
            elif value not in (None, ""):
                flags.append(f"{param.flag} {shlex.quote(str(value))}")
        prompt = self.prompt.value
        if "{" in prompt or "}" in prompt:
            flags.append("--raw")  # the panel sends braces as typed; the magic would interpolate them
        if self.force.value:
            flags.append("--force")
        return " ".join(["%%nanobanana", *flags]) + "\n" + prompt

    # -- generating ---------------------------------------------------------------------

    def _on_generate(self, _button: Any) -> None:
        self.references.recheck()  # a result may have aged, a file changed, upload_to been set
        request = self._validate()
        if request is None:  # button.click() runs even on a disabled button
            return
        with self._lock:
            self._submitting += 1
        self._refresh_status()
        threading.Thread(
            target=self._submit,
            args=(request, self.references.value, self.force.value),
            daemon=True,
            name="nanobanana-panel-submit",
        ).start()

    def _submit(self, request: params.GenerationRequest, sources: list[Any], force: bool) -> None:
        # Off the main thread: uploads and a submit may take a while, and the kernel must stay free.
        generation, error = None, None
        try:
            generation = self.context.session.submit_sources(
                request, sources, namespace=self.context.namespace, force=force
            )
        except Exception as exc:  # NanoBananaError or not, this thread has no cell to show it in
            error = exc
        with self._lock:  # add before counting down: wait() must never see neither
            if generation is not None:
                self._add(generation)
            self._submitting -= 1
            self._last_error = error
        self._refresh_status()

    def wait(self, timeout: float | None = None) -> list[Generation]:
        """Block until every generation started here has ended (scripts, headless runs); the results."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                submitting, pending = self._submitting, [g for g in self.results if not g.done]
            if not submitting and not pending:
                if self._last_error is not None:  # the latest Generate was refused
                    error = self._last_error
                    raise error if isinstance(error, NanoBananaError) else NanoBananaError(str(error))
                return list(self.results)
            if deadline is not None and time.monotonic() > deadline:
                raise TaskTimeoutError(f"{submitting + len(pending)} panel task(s) still running after {timeout:g} s")
            if pending:
                pending[0].join(0.1)
            else:
                time.sleep(0.05)

    def use_as_reference(self, generation: Generation) -> None:
        """Add a result of the gallery to the reference images (its "Use as reference" button)."""
        self.references.add_result(generation)

    def _add(self, generation: Generation) -> None:
        tile = Tile(generation, self.show, self.use_as_reference)
        with self._lock:
            self.results.insert(0, generation)
            self._tiles[id(generation)] = tile
            self.gallery.children = (tile.box, *self.gallery.children)
        tile.update()
        generation.add_listener(self._on_progress)

    def _on_progress(self, generation: Generation) -> None:
        """Called from the poller's worker threads after every change of a generation."""
        self._tiles[id(generation)].update()
        self._refresh_status()
        if generation.done and not generation.cached:
            self._refresh_credits()

    def _refresh_status(self) -> None:
        with self._lock:
            total, pending = len(self.results), [g for g in self.results if not g.done]
            submitting, error = self._submitting, self._last_error
            done = sum(g.status == "succeeded" for g in self.results)
            failed = sum(g.status == "failed" for g in self.results)
        parts = [f"submitting {submitting}…"] if submitting else []
        if pending:
            running = ", ".join(f"{g.task_id[:8]}… {g.elapsed:.0f} s" for g in pending[:4])
            parts.append(f"{len(pending)} pending: {running}{' …' if len(pending) > 4 else ''}")
        if total:
            parts.append(f"✓ {done} done" + (f" · {failed} failed" if failed else ""))
        elif not parts:
            parts.append("ready: write a prompt, then Generate")
        shown = f"{type(error).__name__}: {with_hint(error)}" if error is not None else ""
        self.status.value = message_html(" · ".join(parts), MUTED_STYLE) + (
            f"<br>{message_html(shown)}" if error else ""
        )

    def _refresh_credits(self) -> None:
        """Ask for the balance off the main thread; only the newest answer is shown."""
        with self._lock:
            self._credits_call += 1
            call = self._credits_call

        def load() -> None:
            try:
                text = f"credits: {self.context.session.connection.credits():,.0f}"
            except NanoBananaError as exc:
                text = f"credits: unavailable ({type(exc).__name__})"
            if call == self._credits_call:
                self.credits.value = message_html(text, MUTED_STYLE)

        threading.Thread(target=load, daemon=True, name="nanobanana-panel-credits").start()

    def show(self, generation: Generation) -> None:
        """Show a result full size with its caption (prompt, parameters, task id, file path)."""
        if generation.status != "succeeded":
            return
        fmt = self.context.preview_format
        try:
            preview = generation.preview(self.context.preview_max_px, fmt)
        except NanoBananaError as exc:  # gone or altered: neither shown nor selected
            self.status.value = message_html(with_hint(exc))
            return
        self.selected = generation
        self.preview_image.format = "png" if fmt == "png" else "jpeg"
        self.preview_image.value, self.preview_image.format = preview, widget_format(preview)
        index = self.results.index(generation) if generation in self.results else 0
        lines = [*caption_lines(generation), f"panel.results[{index}]"]
        self.preview_caption.value = (
            f"<div style='{MUTED_STYLE};line-height:1.5'>" + "<br>".join(html.escape(line) for line in lines) + "</div>"
        )
        set_visible(self.preview, True)
