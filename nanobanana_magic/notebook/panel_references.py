"""The panel's reference images: the rows of URLs, paths, picked files and earlier results that
`-i` would take, each with its thumbnail and the message `-i` would give for it."""

from __future__ import annotations

import dataclasses
import html
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..core import params
from ..core.errors import InvalidRequestError
from ..core.hints import with_hint
from ..core.images import preview_bytes
from .panel_widgets import MUTED_STYLE, URL_THUMB_PX, set_visible, show_message, title, widget_format

if TYPE_CHECKING:
    from ..runtime.generation import Generation


REFERENCE_FILES = "references"  # the folder of output_dir where files picked in the panel are kept
UPLOAD_ACCEPT = ".png,.jpg,.jpeg,.webp,image/png,image/jpeg,image/webp"


@dataclasses.dataclass(frozen=True)
class ReferenceHooks:
    """What the reference list needs of its kernel: checks and thumbnails, never a submit."""

    check: Callable[[list[Any]], None]  # raises InvalidRequestError with -i's message; uploads nothing
    fetch: Callable[[str], bytes]  # the bytes of a URL (thumbnails only)
    keep: Callable[[str, bytes], Path]  # where a file picked in the panel is stored, and stores it


class ReferenceList:
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
            f"<b>{html.escape(title(param.label))}</b> "
            f"<span style='{MUTED_STYLE}'>0 to {params.MAX_IMAGE_URLS}: URLs, files, results</span>",
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
            show_message(row.error, row.problem)
        if any(row.problem for row in self.rows):
            message = None
        show_message(self.error, "; ".join(m for m in (self._refused, message) if m) or None)

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
            row.thumb.value, row.thumb.format = self._thumbs[text], widget_format(self._thumbs[text])
        set_visible(row.thumb, bool(self._thumbs.get(text)))
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
            row.thumb.value, row.thumb.format = self._thumbs[text], widget_format(self._thumbs[text])
            set_visible(row.thumb, True)

    def _set_thumb(self, row: SimpleNamespace, make: Callable[[], bytes]) -> None:
        try:
            thumbnail = make()
        except Exception:  # a thumbnail is a courtesy; the row's check says what matters
            return
        if thumbnail:
            row.thumb.value, row.thumb.format = thumbnail, widget_format(thumbnail)
            set_visible(row.thumb, True)
