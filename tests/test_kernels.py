"""The magics in real Jupyter kernels, executed headless through nbclient against the emulator.

Kernels are the slow part (about a second each), so the notebook most flows look at is
executed once per module (`tour`) and several tests read it.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from conftest import API_KEY
from kernel_helpers import (
    SETUP,
    TASK_MIME,
    code_cell,
    execute_notebook,
    kernel_environment,
    live_kernel,
    new_notebook,
    plain_text,
    single_error,
    task_outputs,
    wait_until,
)
from nbclient.exceptions import CellExecutionError
from nbformat import NotebookNode

pytestmark = pytest.mark.kernel

PREVIEW = re.compile(r"data:image/(?:jpeg|png);base64,")  # a small PNG is its own preview
RAISES = "raises-exception"
FIFTEEN_IMAGES = " ".join(f"-i https://example.org/{n}.png" for n in range(15))

# name -> cell of the tour notebook; the order is the execution order.
TOUR_CELLS = {
    "setup": code_cell(SETUP),
    "city": code_cell('city = "Lisbon"'),
    "image": code_cell("%%nanobanana -a 16:9\na watercolour map of {city} at dusk"),
    # more blocking cells: each one once raced its own final update (the cell ended first)
    "image_jpg": code_cell("%%nanobanana -a 1:1 -f jpg\na lemon on a plate"),
    "image_2k": code_cell("%%nanobanana -r 2K -a 9:16\na tall banana tree"),
    "forbidden": code_cell("%%nanobanana\na forbidden subject", RAISES),
    "bad_ratio": code_cell("%%nanobanana -a 7:3\na red apple", RAISES),
    "fifteen_images": code_cell(f"%%nanobanana {FIFTEEN_IMAGES}\na red apple", RAISES),
    "empty_prompt": code_cell("%%nanobanana -a 1:1\n   \n", RAISES),
    "ftp_image": code_cell("%%nanobanana -i ftp://example.org/cat.png\na red apple", RAISES),
    "undefined_name": code_cell("%%nanobanana\na watercolour map of {citty}", RAISES),
    "dry_run": code_cell("%%nanobanana --dry-run -r 4k\na dry apple"),
    "config_command": code_cell("%nanobanana config"),
    "config_magic": code_cell("%config NanoBananaMagics"),
    "config_object": code_cell("import nanobanana_magic\nnanobanana_magic.config()"),
    "history": code_cell("%nanobanana history"),
}
VALIDATION = {  # cell -> words its one-line error must hold
    "bad_ratio": ["7:3", "16:9", "auto"],
    "fifteen_images": ["15", "14"],
    "empty_prompt": ["prompt"],
    "ftp_image": ["ftp://example.org/cat.png", "http"],
    "undefined_name": ["citty", "{{", "--raw"],
}


@dataclass
class ExecutedNotebook:
    """A notebook after a headless run, with the emulator's submit count after each cell."""

    notebook: NotebookNode
    output_dir: Path
    submits_before: int
    submits_after: dict[int, int] = field(default_factory=dict)

    def cell(self, name: str) -> NotebookNode:
        return self.notebook.cells[list(TOUR_CELLS).index(name)]

    def submits_by(self, name: str) -> int:
        """Tasks the emulator created while this cell ran."""
        index = list(TOUR_CELLS).index(name)
        before = self.submits_after.get(index - 1, self.submits_before)
        return self.submits_after[index] - before


@pytest.fixture(scope="module")
def tour(emulator_server, tmp_path_factory) -> ExecutedNotebook:
    """The tour notebook, executed once in a kernel pointed at the session emulator."""
    emulator_server.reset()
    emulator_server.latency = 0.2
    cwd = tmp_path_factory.mktemp("tour")
    env = kernel_environment(emulator_server.base_url, cwd / "out", API_KEY)
    notebook = new_notebook(*copy.deepcopy(list(TOUR_CELLS.values())))
    run = ExecutedNotebook(notebook, cwd / "out", emulator_server.submit_count)

    def count_submits(cell: NotebookNode, cell_index: int, **_: object) -> None:
        run.submits_after[cell_index] = emulator_server.submit_count

    try:
        run.notebook = execute_notebook(notebook, cwd, env, on_cell_executed=count_submits)
    finally:
        emulator_server.reset()
    return run


def assert_one_line_error(cell: NotebookNode, ename: str) -> NotebookNode:
    """The cell failed with a single `ename: message` line and no stack frames."""
    error = single_error(cell)
    assert error.ename == ename, error
    assert len(error.traceback) == 1, error.traceback
    line = error.traceback[0]
    assert ename in line and "\n" not in line.strip()
    assert "Traceback" not in line and "File " not in line and ".py" not in line
    return error


def assert_shows_image(cell: NotebookNode) -> dict:
    """The cell holds exactly one generation output, now an embedded preview; returns its task metadata."""
    shown = task_outputs(cell)
    assert len(shown) == 1, cell.outputs
    output = shown[0]
    assert output.output_type == "display_data"
    assert PREVIEW.search(output.data["text/html"]), output.data["text/plain"]
    task = output.metadata[TASK_MIME]
    assert task["status"] == "succeeded"
    assert task["task_id"] in output.data["text/plain"]
    assert Path(task["path"]).name in output.data["text/plain"]
    return task


# -- 1. images in the executed notebook ---------------------------------------------------


def test_headless_run_leaves_the_image_and_its_caption_in_the_cell(tour):
    cell = tour.cell("image")
    task = assert_shows_image(cell)
    assert "generating" not in plain_text(cell)  # the status line was replaced, not appended to
    assert task["request"]["prompt"] == "a watercolour map of Lisbon at dusk"
    assert task["request"]["aspectRatio"] == "16:9"
    saved = Path(task["path"])
    assert saved.exists() and saved.parent == tour.output_dir
    assert "a watercolour map of Lisbon at dusk" in cell.outputs[0].data["text/plain"]
    assert tour.submits_by("image") == 1
    for name in ("image_jpg", "image_2k"):
        assert_shows_image(tour.cell(name))
        assert tour.submits_by(name) == 1


# -- 2. a failed task ---------------------------------------------------------------------


def test_failed_task_fails_its_cell_with_one_line_naming_the_api_message(tour):
    error = assert_one_line_error(tour.cell("forbidden"), "TaskFailedError")
    assert "flagged by content policy" in error.evalue
    assert tour.submits_by("forbidden") == 1


def test_failed_task_stops_a_run_unless_the_cell_is_tagged_raises_exception(kernel_env, tmp_path):
    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        tagged = kernel.run("%%nanobanana\na forbidden fruit", RAISES)
        assert_one_line_error(tagged, "TaskFailedError")
        with pytest.raises(CellExecutionError, match="TaskFailedError") as raised:
            kernel.run("%%nanobanana\nanother forbidden fruit")
    assert raised.value.ename == "TaskFailedError"
    assert "flagged by content policy" in raised.value.evalue


# -- 3. validation ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VALIDATION))
def test_invalid_cell_sends_nothing_and_fails_with_one_line(tour, name):
    error = assert_one_line_error(tour.cell(name), "InvalidRequestError")
    for word in VALIDATION[name]:
        assert word in error.evalue, error.evalue
    assert tour.submits_by(name) == 0


def test_missing_key_sends_nothing_and_says_how_to_set_one(emulator, tmp_path):
    env = kernel_environment(emulator.base_url, tmp_path / "out", api_key=None)
    notebook = new_notebook(SETUP, code_cell("%%nanobanana\na red apple", RAISES))
    executed = execute_notebook(notebook, tmp_path, env)
    error = assert_one_line_error(executed.cells[1], "AuthenticationError")
    assert "NANOBANANA_API_KEY" in error.evalue and "%nanobanana login" in error.evalue
    assert emulator.submit_count == 0 and not emulator.requests


def test_dry_run_shows_the_body_and_sends_nothing(tour):
    text = plain_text(tour.cell("dry_run"))
    assert '"prompt": "a dry apple"' in text and '"resolution": "4K"' in text
    assert tour.submits_by("dry_run") == 0


# -- 4. concurrent background cells ----------------------------------------------------------


def test_twelve_no_wait_cells_all_get_their_image_after_a_final_wait(emulator, kernel_env, tmp_path):
    emulator.latency = 0.3
    cells = [f"%%nanobanana --no-wait\nbanana number {n}" for n in range(12)]
    notebook = new_notebook(SETUP, *cells, "%nanobanana wait")
    executed = execute_notebook(notebook, tmp_path, kernel_env)

    task_ids = []
    for n, cell in enumerate(executed.cells[1:13]):
        task = assert_shows_image(cell)
        assert task["request"]["prompt"] == f"banana number {n}"
        task_ids.append(task["task_id"])
    assert len(set(task_ids)) == 12
    assert emulator.submit_count == 12
    assert "12 done, 0 pending, 0 failed" in plain_text(executed.cells[13])
    assert not task_outputs(executed.cells[13])  # the images went to their own cells


# -- 5. the cache -------------------------------------------------------------------------


def test_rerunning_a_notebook_answers_from_the_cache_without_calling_the_api(emulator, kernel_env, tmp_path):
    notebook = new_notebook(
        SETUP,
        "%%nanobanana -r 2K\na lighthouse in a storm",
        "%%nanobanana --no-wait -a 1:1\na lighthouse keeper",
        "%nanobanana wait",
    )
    first = execute_notebook(copy.deepcopy(notebook), tmp_path, kernel_env)
    submits, polls = emulator.submit_count, emulator.poll_count()
    second = execute_notebook(notebook, tmp_path, kernel_env)

    assert submits == 2
    assert emulator.submit_count == submits and emulator.poll_count() == polls
    for index in (1, 2):
        before, after = assert_shows_image(first.cells[index]), assert_shows_image(second.cells[index])
        assert after["cached"] and not before["cached"]
        assert after["task_id"] == before["task_id"]
        assert "cached" in task_outputs(second.cells[index])[0].data["text/plain"]


# -- 6. a kernel that dies after the submit -------------------------------------------------


def test_task_of_a_killed_kernel_is_fetched_by_a_new_kernel_without_a_new_submit(emulator, kernel_env, tmp_path):
    emulator.latency = None  # tasks end only on emulator.finish()
    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        kernel.run("%%nanobanana --no-wait\na castle in the fog")
        lines = (tmp_path / "out" / "runs.jsonl").read_text().splitlines()
        task_id = json.loads(lines[0])["task_id"]
        kernel.kill()
    assert emulator.submit_count == 1
    assert emulator.finish(task_id)

    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        history = plain_text(kernel.run("%nanobanana history"))
        fetched = kernel.run(f"%nanobanana fetch {task_id}")
        after = plain_text(kernel.run("%nanobanana history"))

    row = next(line for line in history.splitlines() if task_id in line)
    assert "pending" in row
    assert assert_shows_image(fetched)["task_id"] == task_id
    assert "succeeded" in next(line for line in after.splitlines() if task_id in line)
    assert emulator.submit_count == 1


# -- 7. an interrupt during a blocking wait ---------------------------------------------------


def test_interrupt_during_a_blocking_wait_leaves_the_task_pending_and_fetchable(emulator, kernel_env, tmp_path):
    emulator.latency = None
    with live_kernel(tmp_path, kernel_env, timeout=20) as kernel:
        kernel.run(SETUP)

        def interrupt_once_polling() -> None:
            wait_until(lambda: emulator.poll_count() >= 3, what="the kernel to poll its task")
            kernel.interrupt()

        interrupter = threading.Thread(target=interrupt_once_polling, daemon=True)
        interrupter.start()
        waited = kernel.run("%%nanobanana --wait\na slow sunrise", RAISES)
        shown_after_interrupt = plain_text(waited)  # before later cells' updates reach this cell
        interrupter.join(5)
        (task_id,) = emulator.tasks
        history = plain_text(kernel.run("%nanobanana history"))
        assert emulator.finish(task_id)
        kernel.run("%nanobanana wait")
        fetched = kernel.run(f"%nanobanana fetch {task_id}")

    assert single_error(waited).ename == "KeyboardInterrupt"
    assert "stopped waiting" in shown_after_interrupt and "generating" not in shown_after_interrupt
    assert "pending" in next(line for line in history.splitlines() if task_id in line)
    assert assert_shows_image(waited)["task_id"] == task_id  # `wait` filled the interrupted cell
    assert assert_shows_image(fetched)["task_id"] == task_id
    assert emulator.submit_count == 1


# -- 8. the key stays secret -------------------------------------------------------------------


def test_api_key_appears_nowhere_in_the_notebook_or_the_output_dir(tour):
    text = nbformat.writes(tour.notebook)
    assert API_KEY not in text
    masked_tail = API_KEY[-4:]
    assert masked_tail in plain_text(tour.cell("config_command"))  # shown masked, so it was looked at
    files = [p for p in tour.output_dir.rglob("*") if p.is_file()]
    assert any(p.name == "runs.jsonl" for p in files) and len(files) >= 2
    for path in files:
        assert API_KEY.encode() not in path.read_bytes(), path


def test_config_views_show_the_key_masked(tour):
    for name in ("config_command", "config_magic", "config_object"):
        text = plain_text(tour.cell(name))
        assert text and API_KEY not in text
    assert "api_key" in plain_text(tour.cell("config_command"))


# -- 9. a light %load_ext ---------------------------------------------------------------------

LOAD_CHECK = """\
import sys, time
before = set(sys.modules)
started = time.perf_counter()
get_ipython().run_line_magic("load_ext", "nanobanana_magic")
load_seconds = time.perf_counter() - started
loaded = {name.partition(".")[0] for name in set(sys.modules) - before}
print(sorted(loaded & {"requests", "PIL", "ipywidgets", "urllib3"}), f"{load_seconds:.3f}")
"""


def test_load_ext_imports_neither_requests_nor_pillow_nor_ipywidgets(kernel_env, tmp_path):
    executed = execute_notebook(new_notebook(LOAD_CHECK, "%nanobanana help"), tmp_path, kernel_env)
    heavy, seconds = plain_text(executed.cells[0]).split("] ")
    assert heavy == "[", f"%load_ext imported {heavy}]"
    print(f"\n%load_ext nanobanana_magic in a fresh kernel: {float(seconds) * 1000:.0f} ms")
    assert "%%nanobanana" in plain_text(executed.cells[1])
