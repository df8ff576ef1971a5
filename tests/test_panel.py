"""The control panel, driven through its widgets' traits in Python against the emulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import ipywidgets as W
import pytest
from conftest import API_KEY, shown_as
from IPython.core.magic_arguments import parse_argstring

import nanobanana_magic

NOWHERE = "http://127.0.0.1:9"  # connection refused at once: URLs that are valid but never load
from nanobanana_magic.core import params as params
from nanobanana_magic.core.errors import InsufficientCreditsError, InvalidRequestError
from nanobanana_magic.notebook.control_panel import Panel, PanelContext
from nanobanana_magic.runtime import references


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Deadline loop for state that worker threads change (no bare sleeps)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        pause.wait(0.01)


def magics_of(shell):
    return shell.magics_manager.registry["NanoBananaMagics"]


@pytest.fixture
def panel(shell) -> Panel:
    return Panel(PanelContext.of(magics_of(shell)))


def generate(panel: Panel, prompt: str, count_before: int | None = None):
    """Type a prompt, click Generate, return the new Generation once it has ended."""
    before = len(panel.results) if count_before is None else count_before
    panel.prompt.widget.value = prompt
    panel.generate.click()
    wait_until(lambda: len(panel.results) > before)
    generation = panel.results[0]
    assert generation.join(10), "the task did not end in time"
    wait_until(lambda: panel._tiles[id(generation)]._final)  # the listener has drawn the tile
    return generation


def magic_message(**values) -> str:
    with pytest.raises(InvalidRequestError) as info:
        params.GenerationRequest(**{"prompt": "a cat", **values})
    return str(info.value)


# -- built from the parameter definition ---------------------------------------------------


def test_every_parameter_gets_a_control_of_its_kind(panel):
    kinds = {field.param.name: field for field in panel.fields}
    assert set(kinds) == {p.name for p in params.PARAMETERS}
    assert isinstance(panel.prompt.widget, W.Textarea)
    assert isinstance(kinds["aspect_ratio"].widget, W.Dropdown)
    assert kinds["aspect_ratio"].widget.options == params.ASPECT_RATIOS
    assert isinstance(kinds["resolution"].widget, W.ToggleButtons)
    assert isinstance(kinds["output_format"].widget, W.ToggleButtons)
    assert isinstance(kinds["google_search"].widget, W.Checkbox)
    assert isinstance(kinds["callback_url"].widget, W.Text)
    assert kinds["image_urls"].value == [] and not kinds["image_urls"].add.disabled


def test_a_parameter_added_to_the_definition_appears_and_reaches_the_request(shell, emulator, monkeypatch):
    style = params.Param(
        "style",
        "style",
        "style",
        "choice",
        default="photo",
        choices=("photo", "sketch", "ink"),
        flags=("--style",),
        help="rendering style",
    )
    extended = params.PARAMETERS + (style,)
    monkeypatch.setattr(params, "PARAMETERS", extended)
    monkeypatch.setattr(params, "BY_NAME", {p.name: p for p in extended})
    monkeypatch.setattr(params, "BY_JSON", {p.json_name: p for p in extended})
    panel = Panel(PanelContext.of(magics_of(shell)))
    control = panel.field("style")
    assert isinstance(control.widget, W.ToggleButtons) and control.widget.value == "photo"
    control.widget.value = "sketch"
    generation = generate(panel, "a lighthouse")
    assert generation.request["style"] == "sketch"
    assert emulator.tasks[generation.task_id].body["style"] == "sketch"
    assert panel.cell_text().startswith("%%nanobanana --style sketch\n")


def test_defaults_follow_the_configuration(shell):
    magics = magics_of(shell)
    magics.aspect_ratio, magics.resolution, magics.google_search = "16:9", "2K", True
    panel = Panel(PanelContext.of(magics))
    assert panel.field("aspect_ratio").widget.value == "16:9"
    assert panel.field("resolution").widget.value == "2K"
    assert panel.field("google_search").widget.value is True


# -- validation in place ---------------------------------------------------------------------


def test_generate_is_disabled_until_there_is_a_prompt_and_no_message_shows_before_typing(panel):
    assert panel.generate.disabled
    assert panel.prompt.error.value == ""
    panel.prompt.widget.value = "a red apple"
    assert not panel.generate.disabled
    panel.prompt.widget.value = "   "
    assert panel.generate.disabled
    assert "prompt is empty" in panel.prompt.error.value


def test_an_over_long_prompt_shows_the_magics_message_and_the_counter_goes_negative(panel):
    panel.prompt.widget.value = "a" * 19_990
    assert "10 characters left" in panel.counter.value
    panel.prompt.widget.value = "a" * 20_005
    assert magic_message(prompt="a" * 20_005) in panel.prompt.error.value
    assert "5 characters over the limit" in panel.counter.value
    assert panel.generate.disabled


def test_an_invalid_image_url_is_marked_on_its_row_with_the_magics_message(panel):
    panel.prompt.widget.value = "a cat"
    urls = panel.field("image_urls")
    row = urls.add_row("ftp://example.org/cat.png")
    with pytest.raises(InvalidRequestError) as info:  # what -i says of it
        references.resolve(["ftp://example.org/cat.png"])
    message = str(info.value)
    assert message.replace("'", "&#x27;") in row.error.value
    assert panel.generate.disabled and panel.generate.tooltip == message
    row.text.value = f"{NOWHERE}/cat.png"
    assert row.error.value == "" and not panel.generate.disabled


def test_an_invalid_callback_url_is_marked_next_to_its_field(panel):
    panel.prompt.widget.value = "a cat"
    panel.field("callback_url").widget.value = "not a url"
    assert "callback URL" in panel.field("callback_url").error.value
    assert panel.generate.disabled


def test_the_image_list_adds_and_removes_rows_up_to_fourteen(panel):
    urls = panel.field("image_urls")
    for n in range(params.MAX_IMAGE_URLS):
        urls.add_row(f"{NOWHERE}/{n}.png")
    assert len(urls.value) == 14 and urls.add.disabled
    urls.rows[0].remove.click()
    assert len(urls.value) == 13 and not urls.add.disabled
    assert urls.value[0] == f"{NOWHERE}/1.png"


def test_a_reference_image_shows_a_thumbnail_once_its_url_loads(panel, emulator):
    row = panel.field("image_urls").add_row(emulator.sample_url("banana"))
    wait_until(lambda: row.thumb.layout.display is None)
    assert shown_as(row.thumb) in ("jpeg", "png")


def test_clicking_generate_with_an_invalid_request_submits_nothing(panel, emulator):
    panel.prompt.widget.value = "a" * 20_001
    panel.generate.click()
    assert panel.results == [] and emulator.submit_count == 0


# -- generating ------------------------------------------------------------------------------


def test_generate_submits_through_the_session_and_fills_the_gallery(panel, shell, emulator):
    panel.field("aspect_ratio").widget.value = "16:9"
    generation = generate(panel, "a lighthouse at dawn")
    assert emulator.submit_count == 1
    assert magics_of(shell).session.generations[generation.task_id] is generation
    assert generation.status == "succeeded" and generation.request["aspectRatio"] == "16:9"
    tile = panel.gallery.children[0]
    image, caption, buttons = tile.children
    assert [b.description for b in buttons.children] == ["Show", "Use as reference"]
    assert isinstance(image, W.Image) and shown_as(image) in ("jpeg", "png")
    assert "a lighthouse at dawn" in caption.value and "16:9" in caption.value
    wait_until(lambda: "✓ 1 done" in panel.status.value)


def test_clicking_a_result_shows_the_full_preview_with_its_caption(panel):
    generation = generate(panel, "a lighthouse at dawn")
    panel.gallery.children[0].children[-1].children[0].click()  # Show
    assert panel.preview.layout.display is None and panel.selected is generation
    assert panel.preview_image.value
    caption = panel.preview_caption.value
    assert "a lighthouse at dawn" in caption and generation.task_id in caption
    assert generation.path.name in caption and "1K" in caption


def test_a_failed_task_shows_its_error_message_in_the_gallery(panel, emulator):
    emulator.fail_next(message="flagged by content policy")
    generation = generate(panel, "something the policy refuses")
    assert generation.status == "failed"
    text = panel.gallery.children[0].children[0].value
    assert "TaskFailedError" in text and "flagged by content policy" in text
    wait_until(lambda: "1 failed" in panel.status.value)


def test_a_submit_error_shows_in_the_status_line_without_the_key(panel, shell, emulator):
    magics_of(shell).api_key = "sk-wrong-key-0123456789"
    panel.prompt.widget.value = "a cat"
    panel.generate.click()
    wait_until(lambda: "AuthenticationError" in panel.status.value)
    assert panel.results == [] and "0123456789" not in panel.status.value


def test_several_generations_run_at_once_and_list_newest_first(panel, emulator):
    emulator.latency = None  # tasks end only when the test says so
    for prompt in ("first", "second", "third"):
        panel.prompt.widget.value = prompt
        panel.generate.click()
        wait_until(lambda: panel.results and panel.results[0].prompt == prompt)
    wait_until(lambda: "3 pending" in panel.status.value)
    assert all("generating" in tile.children[0].value for tile in panel.gallery.children)
    assert [g.prompt for g in panel.results] == ["third", "second", "first"]
    assert emulator.finish_all() == 3
    assert all(g.join(10) for g in panel.results)
    wait_until(lambda: [len(tile.children) for tile in panel.gallery.children] == [3, 3, 3])
    wait_until(lambda: "✓ 3 done" in panel.status.value)


def test_credits_are_shown_and_refreshed_after_each_task(panel, emulator):
    wait_until(lambda: "credits: 1,000,000,000" in panel.credits.value)
    generate(panel, "a lighthouse")
    wait_until(lambda: "credits: 1,000,000,000" not in panel.credits.value)
    assert f"credits: {emulator.credits:,}" in panel.credits.value


def test_the_panel_lists_this_sessions_earlier_results(shell):
    assert shell.run_cell("%%nanobanana -o earlier\na cell-made image").success
    panel = Panel(PanelContext.of(magics_of(shell)))
    assert panel.results == [shell.user_ns["earlier"]]
    assert isinstance(panel.gallery.children[0].children[0], W.Image)


# -- round trip to code ----------------------------------------------------------------------


def test_copy_as_cell_gives_only_non_default_flags(panel):
    panel.prompt.widget.value = "a red apple"
    assert panel.cell_text() == "%%nanobanana\na red apple"
    panel.field("aspect_ratio").widget.value = "16:9"
    panel.field("google_search").widget.value = True
    panel.field("image_urls").add_row(f"{NOWHERE}/a b.png")
    assert panel.cell_text() == (
        f"%%nanobanana --image '{NOWHERE}/a b.png' --aspect-ratio 16:9 --google-search\na red apple"
    )
    panel.copy.value = True
    assert panel.cell.layout.display is None and panel.cell.value == panel.cell_text()


def test_copy_as_cell_makes_the_same_request_as_the_panel(panel, shell):
    magics = magics_of(shell)
    magics.resolution = "2K"
    panel = Panel(PanelContext.of(magics))
    panel.prompt.widget.value = "json like {\"a\": 1} stays literal"
    panel.field("output_format").widget.value = "jpg"
    panel.field("callback_url").widget.value = f"{NOWHERE}/hook"
    panel.field("image_urls").add_row(f"{NOWHERE}/ref.png")
    panel.force.value = True
    line, _, body = panel.cell_text().partition("\n")
    assert "--raw" in line and "--force" in line
    assert "--resolution 2K" in line  # the configured value, written out so the cell works in any kernel
    args = parse_argstring(magics.nanobanana_cell, line.removeprefix("%%nanobanana"))
    assert magics.build_request(args, body) == panel._validate()
    assert args.force


def test_copy_as_cell_writes_a_value_the_config_would_otherwise_override(shell, panel):
    magics = magics_of(shell)
    magics.aspect_ratio = "16:9"
    panel = Panel(PanelContext.of(magics))
    panel.prompt.widget.value = "a cat"
    panel.field("aspect_ratio").widget.value = "auto"
    assert panel.cell_text() == "%%nanobanana --aspect-ratio auto\na cat"


# -- wiring ------------------------------------------------------------------------------------


def test_the_panel_command_and_function_show_a_panel_of_this_kernel(shell, monkeypatch):
    from nanobanana_magic.notebook import commands as magics_module

    shown = []
    monkeypatch.setattr(magics_module, "display", shown.append)
    shell.run_line_magic("nanobanana", "panel")
    assert isinstance(shown[0], Panel) and isinstance(shown[0], W.VBox)
    assert shown[0].context.session is magics_of(shell).session
    assert nanobanana_magic.panel().context.session is magics_of(shell).session


def test_nothing_in_the_panel_reveals_the_key(panel):
    generate(panel, "a cat")
    texts = [panel.status.value, panel.credits.value, panel.cell_text(), repr(panel)]
    assert not any(API_KEY in text for text in texts)


def test_wait_returns_every_result_and_raises_a_refused_submit(panel, emulator):
    panel.field("prompt").widget.value = "waited for"
    panel.generate.click()
    results = panel.wait(timeout=20)
    assert len(results) == 1 and results[0].status == "succeeded"

    emulator.inject("submit", "status", status=402, style="json")
    panel.field("prompt").widget.value = "refused"
    panel.generate.click()
    with pytest.raises(InsufficientCreditsError, match="402"):
        panel.wait(timeout=20)
    assert "InsufficientCreditsError" in panel.status.value
