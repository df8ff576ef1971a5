"""One result in the panel's gallery: its state while pending, then its thumbnail and caption."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import ipywidgets as W

from ..core.errors import NanoBananaError
from ..core.hints import with_hint
from ..core.render import caption_lines, error_text, status_text
from .panel_widgets import ERROR_STYLE, MUTED_STYLE, THUMB_PX, widget_format

if TYPE_CHECKING:
    from ..runtime.generation import Generation


class Tile:
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
            text, style = f"generating · {gen.elapsed:.0f} s · task {gen.task_id[:12]}…", MUTED_STYLE
            try:
                thumbnail = gen.preview(THUMB_PX, "jpeg") if gen.status == "succeeded" else None
            except NanoBananaError as exc:  # gone or altered: never shown as the result
                thumbnail, text, style = None, with_hint(exc), ERROR_STYLE
            if thumbnail:
                text = caption_lines(gen)[0].rsplit("\" · ", 1)[-1] + (" · cached" if gen.cached else "")
                image = W.Image(
                    value=thumbnail,
                    format=widget_format(thumbnail),
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
                text, style = error_text(gen, with_hint(gen.exception)), ERROR_STYLE
            prompt = html.escape(" ".join(gen.prompt.split())[:70])
            self.label.value = (
                f"<div style='font-size:12px;line-height:1.3'><b>{prompt}</b></div>"
                f"<div style='{style};white-space:normal'>{html.escape(text)}</div>"
            )
            self._final = gen.done
