"""The panel's small parts: one parameter's field, derived from its `Param`, and the helpers
that show a message or a thumbnail in a widget."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from ..core import params
from ..core.errors import InvalidRequestError
from ..core.images import image_format

THUMB_PX = 240
URL_THUMB_PX = 96
TOGGLE_MAX_CHOICES = 4  # more choices than this get a dropdown
LABEL_STYLE = {"description_width": "110px"}
MUTED_STYLE = "color:var(--jp-ui-font-color2,#666);font-size:12px"
ERROR_STYLE = "color:#b00020;font-size:12px"


def title(label: str) -> str:
    return label[:1].upper() + label[1:]


def message_html(text: str | None, style: str = ERROR_STYLE) -> str:
    return f"<span style='{style}'>{html.escape(text)}</span>" if text else ""


def param_problem(param: params.Param, value: Any) -> str | None:
    """The magic's own message for an invalid value, or None."""
    try:
        param.clean(value)
    except InvalidRequestError as exc:
        return str(exc)
    return None


def widget_format(data: bytes | None) -> str:
    """An `Image` widget's format for preview bytes: a small PNG is its own preview, the rest are JPEG."""
    return "png" if data and image_format(data) == "png" else "jpeg"


def set_visible(widget: W.Widget, visible: bool) -> None:
    widget.layout.display = None if visible else "none"


def show_message(widget: W.HTML, message: str | None) -> None:
    widget.value = message_html(message)
    set_visible(widget, bool(message))


class Field:
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
        show_message(self.error, message)

    def observe(self, callback: Callable[[], None]) -> None:
        self.widget.observe(lambda change: callback(), names="value")


def simple_field(param: params.Param, value: Any) -> Field:
    """A widget for the parameter's kind: choices → toggles or dropdown, bool → checkbox, else text."""
    common = dict(description=title(param.label), tooltip=param.help, style=LABEL_STYLE)
    if param.kind == "choice" and len(param.choices) <= TOGGLE_MAX_CHOICES:
        return Field(
            param,
            W.ToggleButtons(
                options=param.choices,
                value=value if value in param.choices else None,
                layout=W.Layout(width="auto", display="flex"),
                **{**common, "style": {**LABEL_STYLE, "button_width": "60px"}},
            ),
        )
    if param.kind == "choice":
        return Field(
            param,
            W.Dropdown(
                options=param.choices,
                value=value if value in param.choices else None,
                layout=W.Layout(width="260px"),
                **common,
            ),
        )
    if param.kind == "bool":
        return Field(param, W.Checkbox(value=bool(value), **common))
    widget = W.Text(
        value=value or "",
        placeholder="https://…" if param.kind == "url" else "",
        layout=W.Layout(width="98%"),
        **common,
    )
    field = Field(param, widget, lambda: widget.value.strip() or None)
    # URLs are long: two columns. Not grid_column: the browser side clears it with the null grid_area.
    field.box.layout.grid_area = "auto / span 2"
    return field
