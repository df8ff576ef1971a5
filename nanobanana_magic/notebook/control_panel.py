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
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..core import params
from ..core.errors import InvalidRequestError, NanoBananaError, TaskTimeoutError
from ..core.hints import with_hint
from ..core.images import image_format, preview_bytes
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


def _cell_source(source: Any) -> str:
    """How `-i` names a panel reference: its text, a kept file's path, a result's saved file."""
    if isinstance(source, str):
        return source
    path = getattr(source, "path", source)  # a Generation: its saved file is the same image by content
    return str(path)


def _widget_format(data: bytes | None) -> str:
    """An `Image` widget's format for preview bytes: a small PNG is its own preview, the rest are JPEG."""
    return "png" if data and image_format(data) == "png" else "jpeg"


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


REFERENCE_FILES = "references"  # the folder of output_dir where files picked in the panel are kept
UPLOAD_ACCEPT = ".png,.jpg,.jpeg,.webp,image/png,image/jpeg,image/webp"


@dataclasses.dataclass(frozen=True)
class ReferenceHooks:
    """What the reference list needs of its kernel: checks and thumbnails, never a submit."""

    check: Callable[[list[Any]], None]  # raises InvalidRequestError with -i's message; uploads nothing
    fetch: Callable[[str], bytes]  # the bytes of a URL (thumbnails only)
    keep: Callable[[str, bytes], Path]  # where a file picked in the panel is stored, and stores it


class _ReferenceList:
    """The reference images, 0 to 14, with the rules of `-i`: a URL or a file path typed on a row, files
    picked with the FileUpload, results of the gallery added by their "Use as reference" button.

    Every row shows a thumbnail and the message `-i` would give for it; `value` is the sources as
    `Session.submit_sources` takes them (the text typed, the path of a kept file, a Generation)."""

    def __init__(self, param: params.Param, urls: Any, hooks: ReferenceHooks) -> None:
        self.param, self.hooks = param, hooks
        self.rows: list[SimpleNamespace] = []  # each: kind, text, source, thumb, remove, error, box, problem
        self._thumbs: dict[str, bytes | None] = {}  # text → thumbnail; None while loading or when it failed
        self._callbacks: list[Callable[[], None]] = []
        self._refused: str | None = None  # why the latest picked file was not added
        self.add = W.Button(
            description="Add reference image", icon="plus", tooltip=param.help, layout=W.Layout(width="auto")
        )
        self.add.on_click(lambda _: self.add_row())
        self.upload = W.FileUpload(
            accept=UPLOAD_ACCEPT,
            multiple=True,
            description="Add files",
            tooltip="PNG, JPEG or WebP files from this computer (uploaded to upload_to when generating)",
            layout=W.Layout(width="auto"),
        )
        self.upload.observe(lambda change: self._picked(change["new"]), names="value")
        self.rows_box, self.error = W.VBox(), W.HTML(layout=W.Layout(display="none"))
        heading = W.HTML(
            f"<b>{html.escape(_title(param.label))}</b> "
            f"<span style='{_MUTED}'>0 to {params.MAX_IMAGE_URLS}: URLs, files, results</span>",
            layout=W.Layout(width="260px"),
        )
        self.box = W.VBox(
            [
                W.HBox([heading, self.add, self.upload], layout=W.Layout(align_items="center")),
                self.rows_box,
                self.error,
            ],
            layout=W.Layout(margin="4px 0"),
        )
        self.box.add_class("nanobanana-images")
        for url in urls or ():
            self.add_row(url)

    @property
    def value(self) -> list[Any]:
        """The sources, in order (empty text rows left out)."""
        return [row.source() for row in self.rows if row.kind != "text" or row.text.value.strip()]

    # -- adding and removing ------------------------------------------------------------

    def add_row(self, url: str = "") -> SimpleNamespace:
        """A row to type a URL, a file path (relative to the kernel's folder) or @NAME in."""
        text = W.Text(
            value=url,
            placeholder="https://example.org/reference.png, photos/cat.jpg or @result",
            continuous_update=False,
            layout=W.Layout(flex="1 1 auto", width="auto"),
        )
        row = self._new_row("text", text, lambda: text.value.strip())
        text.observe(lambda change: self._text_changed(row), names="value")
        self._text_changed(row)
        return row

    def add_file(self, name: str, data: bytes) -> SimpleNamespace | None:
        """A file picked in the panel: kept under output_dir/references, checked as -i checks a file.
        A file -i would refuse is not kept; the message names it and shows under the list."""
        path = self.hooks.keep(name, data)
        problem = self._problem(str(path))
        if problem:
            path.unlink(missing_ok=True)
            self._refused = problem.replace(str(path), name)
            self._changed()
            return None
        label = W.Text(value=name, disabled=True, tooltip=str(path), layout=W.Layout(flex="1 1 auto", width="auto"))
        row = self._new_row("file", label, lambda: str(path))
        self._set_thumb(row, lambda: preview_bytes(data, URL_THUMB_PX, "jpeg"))
        self._changed()
        return row

    def add_result(self, generation: Generation) -> SimpleNamespace:
        """A result of the gallery: sent as its result URL while fresh, else uploaded from its file."""
        label = W.Text(
            value=f"result {generation.task_id[:12]}… · {' '.join(generation.prompt.split())[:40]}",
            disabled=True,
            tooltip=f"task {generation.task_id}",
            layout=W.Layout(flex="1 1 auto", width="auto"),
        )
        row = self._new_row("result", label, lambda: generation)
        row.problem = self._problem(generation)
        self._set_thumb(row, lambda: generation.preview(URL_THUMB_PX, "jpeg") or b"")
        self._changed()
        return row

    def remove_row(self, row: SimpleNamespace) -> None:
        self.rows.remove(row)
        self._changed()

    def _new_row(self, kind: str, text: W.Text, source: Callable[[], Any]) -> SimpleNamespace:
        row = SimpleNamespace(
            kind=kind,
            text=text,
            source=source,
            problem=None,
            thumb=W.Image(format="jpeg", layout=W.Layout(display="none", height="48px", width="auto")),
            remove=W.Button(icon="trash", tooltip="remove this image", layout=W.Layout(width="40px")),
            error=W.HTML(layout=W.Layout(display="none")),
        )
        row.box = W.VBox([W.HBox([row.text, row.thumb, row.remove]), row.error])
        row.remove.on_click(lambda _: self.remove_row(row))
        self.rows.append(row)
        return row

    def _picked(self, files: Any) -> None:
        if not files:
            return
        self._refused = None
        for item in files:
            self.add_file(str(item["name"]), bytes(item["content"]))
        self.upload.value = ()  # ready for the next pick (the same file again included)

    # -- checking -----------------------------------------------------------------------

    def observe(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def problem(self) -> str | None:
        """The first row's message, else too many images, else None."""
        for row in self.rows:
            if row.problem:
                return str(row.problem)
        count = len(self.value)
        if count > params.MAX_IMAGE_URLS:
            return f"{count} reference images given; the API accepts at most {params.MAX_IMAGE_URLS}"
        return None

    def recheck(self) -> None:
        """Check every row again (a result may have aged past result_url_ttl, upload_to may have changed)."""
        for row in self.rows:
            source = row.source()
            row.problem = self._problem(source) if row.kind != "text" or source else None
        self._changed()

    def mark(self, message: str | None) -> None:
        """Each row shows its own message; under the rows, a refused file or the list's own (too many)."""
        for row in self.rows:
            _mark(row.error, row.problem)
        if any(row.problem for row in self.rows):
            message = None
        _mark(self.error, "; ".join(m for m in (self._refused, message) if m) or None)

    def _problem(self, source: Any) -> str | None:
        try:
            self.hooks.check([source])
        except InvalidRequestError as exc:
            return with_hint(exc)  # -i's message, with the notebook's advice (how to set upload_to, ...)
        return None

    def _changed(self) -> None:
        self.rows_box.children = tuple(row.box for row in self.rows)
        full = len(self.rows) >= params.MAX_IMAGE_URLS
        self.add.disabled = self.upload.disabled = full
        for callback in list(self._callbacks):
            callback()

    # -- thumbnails ---------------------------------------------------------------------

    def _text_changed(self, row: SimpleNamespace) -> None:
        text = row.text.value.strip()
        row.problem = self._problem(text) if text else None
        if self._thumbs.get(text):
            row.thumb.value, row.thumb.format = self._thumbs[text], _widget_format(self._thumbs[text])
        _show(row.thumb, bool(self._thumbs.get(text)))
        if text and text not in self._thumbs and not row.problem:
            self._thumbs[text] = None
            threading.Thread(
                target=self._load_text_thumb, args=(row, text), daemon=True, name="nanobanana-panel-thumb"
            ).start()
        self._changed()

    def _load_text_thumb(self, row: SimpleNamespace, text: str) -> None:
        try:
            if "://" in text:
                data = self.hooks.fetch(text)
            else:
                data = Path(text).expanduser().read_bytes() if not text.startswith("@") else b""
            self._thumbs[text] = preview_bytes(data, URL_THUMB_PX, "jpeg") if data else None
        except Exception:  # no thumbnail is all it costs: the API fetches the URL itself
            return
        if self._thumbs[text] and row.text.value.strip() == text:  # only the thumbnail: checks stay on the main thread
            row.thumb.value, row.thumb.format = self._thumbs[text], _widget_format(self._thumbs[text])
            _show(row.thumb, True)

    def _set_thumb(self, row: SimpleNamespace, make: Callable[[], bytes]) -> None:
        try:
            thumbnail = make()
        except Exception:  # a thumbnail is a courtesy; the row's check says what matters
            return
        if thumbnail:
            row.thumb.value, row.thumb.format = thumbnail, _widget_format(thumbnail)
            _show(row.thumb, True)


class _Tile:
    """One result in the gallery: its state while pending, then thumbnail and caption, or the error."""

    def __init__(
        self, generation: Generation, on_show: Callable[[Generation], None], on_use: Callable[[Generation], None]
    ) -> None:
        self.generation, self._on_show, self._on_use = generation, on_show, on_use
        self.show_button: W.Button | None = None  # once the result is there
        self.use_button: W.Button | None = None
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
                    value=thumbnail,
                    format=_widget_format(thumbnail),
                    layout=W.Layout(width="100%", height="150px", object_fit="contain"),
                )
                show = W.Button(
                    description="Show", icon="search-plus", tooltip=f"task {gen.task_id}", layout=W.Layout(width="38%")
                )
                show.on_click(lambda _: self._on_show(gen))
                use = W.Button(
                    description="Use as reference",
                    icon="plus",
                    tooltip="add this result to the reference images of the next request",
                    layout=W.Layout(width="62%"),
                )
                use.on_click(lambda _: self._on_use(gen))
                self.show_button, self.use_button = show, use
                self.box.children = (image, self.label, W.HBox([show, use]))
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
                field = self.references = _ReferenceList(param, self._default(param), self.context.reference_hooks())
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
        """Mark each field with the magic's message; the request (without its reference images,
        which Generate resolves as `-i` does) when everything is valid."""
        problems = []
        for field in self.fields:
            problem = field.problem() if field is self.references else _problem(field.param, field.value)
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
        tile = _Tile(generation, self.show, self.use_as_reference)
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
        self.preview_image.value, self.preview_image.format = preview, _widget_format(preview)
        index = self.results.index(generation) if generation in self.results else 0
        lines = [*caption_lines(generation), f"panel.results[{index}]"]
        self.preview_caption.value = (
            f"<div style='{_MUTED};line-height:1.5'>" + "<br>".join(html.escape(line) for line in lines) + "</div>"
        )
        _show(self.preview, True)
