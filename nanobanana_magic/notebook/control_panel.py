"""The control panel: ipywidgets over the same parameters, validation and session as `%%nanobanana`.

Every control is derived from `params.PARAMETERS`, values are checked with `Param.clean` and
`GenerationRequest`, and Generate goes through `Session.submit`: one code path. Worker
threads update the widgets from `Generation.add_listener` callbacks by setting traits (never
`with output:`), so the kernel stays free while tasks run.
"""

from __future__ import annotations

import dataclasses
import html
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..core import params
from ..core.errors import InvalidRequestError, NanoBananaError, TaskTimeoutError
from ..core.hints import with_hint
from ..core.images import preview_bytes
from ..core.render import caption_lines, error_text, status_text

if TYPE_CHECKING:
    from ..runtime.generation import Generation
    from ..session.session import Session

THUMB_PX = 240
URL_THUMB_PX = 96
TOGGLE_MAX_CHOICES = 4  # more choices than this get a dropdown
LABEL_STYLE = {"description_width": "110px"}
_MUTED = "color:var(--jp-ui-font-color2,#666);font-size:12px"
_ERROR = "color:#b00020;font-size:12px"


def _title(label: str) -> str:
    return label[:1].upper() + label[1:]


def _message(text: str | None, style: str = _ERROR) -> str:
    return f"<span style='{style}'>{html.escape(text)}</span>" if text else ""


def _problem(param: params.Param, value: Any) -> str | None:
    """The magic's own message for an invalid value, or None."""
    try:
        param.clean(value)
    except InvalidRequestError as exc:
        return str(exc)
    return None


def _show(widget: W.Widget, visible: bool) -> None:
    widget.layout.display = None if visible else "none"


def _mark(widget: W.HTML, message: str | None) -> None:
    widget.value = _message(message)
    _show(widget, bool(message))


class _Field:
    """One parameter's control, the message line next to it, and how to read and set it."""

    def __init__(self, param: params.Param, widget: W.Widget, read: Callable[[], Any] | None = None) -> None:
        self.param, self.widget = param, widget
        self._read = read or (lambda: widget.value)
        self.error = W.HTML(layout=W.Layout(display="none", margin="0 0 0 118px"))
        self.box = W.VBox([widget, self.error])

    @property
    def value(self) -> Any:
        return self._read()

    def mark(self, message: str | None) -> None:
        _mark(self.error, message)

    def observe(self, callback: Callable[[], None]) -> None:
        self.widget.observe(lambda change: callback(), names="value")


def _simple_field(param: params.Param, value: Any) -> _Field:
    """A widget for the parameter's kind: choices → toggles or dropdown, bool → checkbox, else text."""
    common = dict(description=_title(param.label), tooltip=param.help, style=LABEL_STYLE)
    if param.kind == "choice" and len(param.choices) <= TOGGLE_MAX_CHOICES:
        return _Field(
            param,
            W.ToggleButtons(
                options=param.choices,
                value=value if value in param.choices else None,
                layout=W.Layout(width="auto", display="flex"),
                **{**common, "style": {**LABEL_STYLE, "button_width": "60px"}},
            ),
        )
    if param.kind == "choice":
        return _Field(
            param,
            W.Dropdown(
                options=param.choices,
                value=value if value in param.choices else None,
                layout=W.Layout(width="260px"),
                **common,
            ),
        )
    if param.kind == "bool":
        return _Field(param, W.Checkbox(value=bool(value), **common))
    widget = W.Text(
        value=value or "",
        placeholder="https://…" if param.kind == "url" else "",
        layout=W.Layout(width="98%"),
        **common,
    )
    field = _Field(param, widget, lambda: widget.value.strip() or None)
    # URLs are long: two columns. Not grid_column: the browser side clears it with the null grid_area.
    field.box.layout.grid_area = "auto / span 2"
    return field


class _UrlList:
    """The reference-image editor: one row per URL (text, thumbnail once it loads, remove), up to the limit."""

    def __init__(self, param: params.Param, urls: Any, fetch: Callable[[str], bytes]) -> None:
        self.param, self._fetch = param, fetch
        self.rows: list[SimpleNamespace] = []  # each: text, thumb, error, box
        self._thumbs: dict[str, bytes | None] = {}  # url → thumbnail; None while loading or when it failed
        self._callbacks: list[Callable[[], None]] = []
        self.add = W.Button(
            description="Add reference image", icon="plus", tooltip=param.help, layout=W.Layout(width="auto")
        )
        self.add.on_click(lambda _: self.add_row())
        self.rows_box, self.error = W.VBox(), W.HTML(layout=W.Layout(display="none"))
        heading = W.HTML(
            f"<b>{html.escape(_title(param.label))}</b> "
            f"<span style='{_MUTED}'>0 to {params.MAX_IMAGE_URLS} http(s) URLs</span>",
            layout=W.Layout(width="260px"),
        )
        self.box = W.VBox(
            [W.HBox([heading, self.add, self.error], layout=W.Layout(align_items="center")), self.rows_box],
            layout=W.Layout(margin="4px 0"),
        )
        self.box.add_class("nanobanana-images")
        for url in urls or ():
            self.add_row(url)

    @property
    def value(self) -> list[str]:
        return [row.text.value.strip() for row in self.rows if row.text.value.strip()]

    def add_row(self, url: str = "") -> SimpleNamespace:
        row = SimpleNamespace(
            text=W.Text(
                value=url,
                placeholder="https://example.org/reference.png",
                continuous_update=False,
                layout=W.Layout(flex="1 1 auto", width="auto"),
            ),
            thumb=W.Image(format="jpeg", layout=W.Layout(display="none", height="48px", width="auto")),
            remove=W.Button(icon="trash", tooltip="remove this image", layout=W.Layout(width="40px")),
            error=W.HTML(layout=W.Layout(display="none")),
        )
        row.box = W.VBox([W.HBox([row.text, row.thumb, row.remove]), row.error])
        row.text.observe(lambda change: self._url_changed(row), names="value")
        row.remove.on_click(lambda _: self.remove_row(row))
        self.rows.append(row)
        self._url_changed(row)
        return row

    def remove_row(self, row: SimpleNamespace) -> None:
        self.rows.remove(row)
        self._changed()

    def observe(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def mark(self, message: str | None) -> None:
        """Each row shows its own URL's message; the list's own (too many) goes under the rows."""
        row_problems = False
        for row in self.rows:
            url = row.text.value.strip()
            problem = _problem(self.param, [url]) if url else None
            _mark(row.error, problem)
            row_problems = row_problems or bool(problem)
        _mark(self.error, None if row_problems else message)

    def _changed(self) -> None:
        self.rows_box.children = tuple(row.box for row in self.rows)
        self.add.disabled = len(self.rows) >= params.MAX_IMAGE_URLS
        for callback in list(self._callbacks):
            callback()

    def _url_changed(self, row: SimpleNamespace) -> None:
        url = row.text.value.strip()
        if self._thumbs.get(url):
            row.thumb.value = self._thumbs[url]
        _show(row.thumb, bool(self._thumbs.get(url)))
        if url and url not in self._thumbs and not _problem(self.param, [url]):
            self._thumbs[url] = None
            threading.Thread(
                target=self._load_thumb, args=(row, url), daemon=True, name="nanobanana-panel-thumb"
            ).start()
        self._changed()

    def _load_thumb(self, row: SimpleNamespace, url: str) -> None:
        try:
            self._thumbs[url] = preview_bytes(self._fetch(url), URL_THUMB_PX, "jpeg")
        except Exception:  # no thumbnail is all it costs: the API fetches the URL itself
            return
        if row.text.value.strip() == url:  # only the thumbnail: validation stays on the main thread
            row.thumb.value = self._thumbs[url]
            _show(row.thumb, True)


class _Tile:
    """One result in the gallery: its state while pending, then thumbnail and caption, or the error."""

    def __init__(self, generation: Generation, on_show: Callable[[Generation], None]) -> None:
        self.generation, self._on_show = generation, on_show
        self.label = W.HTML()
        self.box = W.VBox(
            [self.label],
            layout=W.Layout(
                width="220px", margin="0 10px 10px 0", padding="6px", border="1px solid var(--jp-border-color2,#ddd)"
            ),
        )
        self._lock = threading.Lock()  # a cancel on the main thread may race a worker's update
        self._final = False

    def update(self) -> None:
        gen = self.generation
        with self._lock:
            if self._final:
                return
            text, style = f"generating · {gen.elapsed:.0f} s · task {gen.task_id[:12]}…", _MUTED
            try:
                thumbnail = gen.preview(THUMB_PX, "jpeg") if gen.status == "succeeded" else None
            except NanoBananaError as exc:  # gone or altered: never shown as the result
                thumbnail, text, style = None, with_hint(exc), _ERROR
            if thumbnail:
                text = caption_lines(gen)[0].rsplit("\" · ", 1)[-1] + (" · cached" if gen.cached else "")
                image = W.Image(
                    value=thumbnail, format="jpeg", layout=W.Layout(width="100%", height="150px", object_fit="contain")
                )
                show = W.Button(
                    description="Show", icon="search-plus", tooltip=f"task {gen.task_id}", layout=W.Layout(width="100%")
                )
                show.on_click(lambda _: self._on_show(gen))
                self.box.children = (image, self.label, show)
            elif gen.status == "cancelled":
                text = status_text(gen)
            elif gen.done and gen.exception is not None:
                text, style = error_text(gen, with_hint(gen.exception)), _ERROR
            prompt = html.escape(" ".join(gen.prompt.split())[:70])
            self.label.value = (
                f"<div style='font-size:12px;line-height:1.3'><b>{prompt}</b></div>"
                f"<div style='{style};white-space:normal'>{html.escape(text)}</div>"
            )
            self._final = gen.done


@dataclasses.dataclass(frozen=True)
class PanelContext:
    """What the panel reads of its kernel: the session, and the settings as the panel opens."""

    session: Session
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # configured parameter defaults
    preview_max_px: int = 1024
    preview_format: str = "jpeg"

    @classmethod
    def of(cls, magics: Any) -> PanelContext:
        """The context of a loaded `NanoBananaMagics`."""
        defaults = {p.name: getattr(magics, p.name) for p in params.PARAMETERS if p.configurable}
        return cls(magics.session, defaults, magics.preview_max_px, magics.preview_format)


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
        self._tiles: dict[int, _Tile] = {}
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
                field = _UrlList(param, self._default(param), lambda url: self.context.session.connection.download(url))
                urls.append(field.box)
            else:
                field = _simple_field(param, self._default(param))
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
        self.copy.observe(lambda change: _show(self.cell, change["new"]), names="value")
        self.status, self.credits = W.HTML(), W.HTML(_message("credits: …", _MUTED))
        self.gallery = W.Box(layout=W.Layout(display="flex", flex_flow="row wrap", align_items="flex-start"))
        self.preview_image = W.Image(
            format="jpeg",
            layout=W.Layout(max_width="100%", max_height="560px", width="auto", height="auto", object_fit="contain"),
        )
        self.preview_caption = W.HTML()
        close = W.Button(description="Close", icon="times")
        close.on_click(lambda _: _show(self.preview, False))
        self.preview: W.VBox = W.VBox(
            [self.preview_image, self.preview_caption, close], layout=W.Layout(display="none", margin="0 0 10px")
        )
        title = W.HTML(
            "<span style='font-size:17px;font-weight:600'><span style='color:#f2c200'>●</span>"
            " NanoBanana</span>"
            f" <span style='{_MUTED}'>image generation · the options of %%nanobanana</span>"
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
            W.HTML(f"<b>Results</b> <span style='{_MUTED}'>newest first · panel.results[i] in code</span>"),
            self.preview,
            self.gallery,
        ]

    def _prompt_field(self, param: params.Param) -> _Field:
        area = W.Textarea(placeholder=f"What to draw… ({param.help})", rows=3, layout=W.Layout(width="100%"))
        area.observe(lambda change: setattr(self, "_touched", True), names="value")
        self.prompt, self.counter = _Field(param, area, lambda: area.value.strip()), W.HTML()
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
        """Mark each field with the magic's message; the request when everything is valid."""
        problems = []
        for field in self.fields:
            problem = _problem(field.param, field.value)
            field.mark(None if field is self.prompt and not (self._touched or field.value) else problem)
            problems += [problem] if problem else []
        request = None
        if not problems:
            try:
                request = params.GenerationRequest(**self.values())
            except InvalidRequestError as exc:
                problems.append(str(exc))
        left = params.MAX_PROMPT_CHARS - len(self.prompt.value)
        self.counter.value = (
            _message(f"{left:,} characters left", _MUTED)
            if left >= 0
            else _message(f"{-left:,} characters over the limit")
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
                value = param.clean(field.value)
            except InvalidRequestError:
                value = field.value
            if param.kind == "urls":
                flags += [f"{param.flag} {shlex.quote(url)}" for url in value]
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
        request = self._validate()
        if request is None:  # button.click() runs even on a disabled button
            return
        with self._lock:
            self._submitting += 1
        self._refresh_status()
        threading.Thread(
            target=self._submit, args=(request, self.force.value), daemon=True, name="nanobanana-panel-submit"
        ).start()

    def _submit(self, request: params.GenerationRequest, force: bool) -> None:
        # Off the main thread: a submit may retry for a while, and the kernel must stay free.
        generation, error = None, None
        try:
            generation = self.context.session.submit(request, force=force)
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

    def _add(self, generation: Generation) -> None:
        tile = _Tile(generation, self.show)
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
        self.status.value = _message(" · ".join(parts), _MUTED) + (f"<br>{_message(shown)}" if error else "")

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
                self.credits.value = _message(text, _MUTED)

        threading.Thread(target=load, daemon=True, name="nanobanana-panel-credits").start()

    def show(self, generation: Generation) -> None:
        """Show a result full size with its caption (prompt, parameters, task id, file path)."""
        if generation.status != "succeeded":
            return
        fmt = self.context.preview_format
        try:
            preview = generation.preview(self.context.preview_max_px, fmt)
        except NanoBananaError as exc:  # gone or altered: neither shown nor selected
            self.status.value = _message(with_hint(exc))
            return
        self.selected = generation
        self.preview_image.format = "png" if fmt == "png" else "jpeg"
        self.preview_image.value = preview
        index = self.results.index(generation) if generation in self.results else 0
        lines = [*caption_lines(generation), f"panel.results[{index}]"]
        self.preview_caption.value = (
            f"<div style='{_MUTED};line-height:1.5'>" + "<br>".join(html.escape(line) for line in lines) + "</div>"
        )
        _show(self.preview, True)
