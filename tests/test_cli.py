"""Commands a person can learn from the prompt: help, wait, sweep summaries, history, progress, interrupts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import API_KEY

from nanobanana_magic.core.errors import NanoBananaError
from nanobanana_magic.core.render import grid_html, grid_shape, grid_text
from nanobanana_magic.core.states import TaskState
from nanobanana_magic.notebook import progress as progress_module
from nanobanana_magic.notebook.progress import Progress
from nanobanana_magic.runtime.batch import BatchProgress, run_batch

ROOT = Path(__file__).resolve().parents[1]


def magics_of(shell):
    return shell.magics_manager.registry["NanoBananaMagics"]


def out_of(shell, capsys, line: str):
    capsys.readouterr()
    result = shell.run_cell(line)
    return result, capsys.readouterr().out


# -- help -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, usage",
    [
        ("%nanobanana history --help", "usage: %nanobanana history"),
        ("%nanobanana history -n 3 --help", "usage: %nanobanana history"),
        ("%nanobanana fetch -h", "usage: %nanobanana fetch"),
        ("%nanobanana export --help", "usage: %nanobanana export"),
        ("%nanobanana help history", "usage: %nanobanana history"),
        ("%nanobanana help fetch", "usage: %nanobanana fetch"),
    ],
)
def test_each_command_prints_its_own_help(shell, emulator, capsys, line, usage):
    result, out = out_of(shell, capsys, line)
    assert result.success, result.error_in_exec
    assert out.startswith(usage)
    assert "unrecognized arguments" not in out and "required" not in out
    assert emulator.submit_count == 0 and not emulator.requests


def test_cell_magic_help_with_an_empty_body_prints_help(shell, emulator, capsys):
    for cell in ("%%nanobanana --help", "%%nanobanana --help\n", "%%nanobanana -h\n\n"):
        result, out = out_of(shell, capsys, cell)
        assert result.success, result.error_in_exec
        assert out.startswith("usage: %%nanobanana") and "empty" not in out
    assert emulator.submit_count == 0


def test_help_lists_the_format_values_and_the_since_syntax(shell, capsys):
    _, everything = out_of(shell, capsys, "%nanobanana help")
    _, history = out_of(shell, capsys, "%nanobanana help history")
    _, export = out_of(shell, capsys, "%nanobanana export -h")
    for text in (everything, history):
        assert "table" in text and "json" in text and "csv" in text and "markdown" in text
    for fmt in ("csv", "json", "jsonl", "md", "imagefolder", "webdataset"):
        assert fmt in everything and fmt in export
    for text in (everything, history, export):
        assert "30m" in text and "7d" in text and "2026-11-24 10:30" in text
    assert "Examples:" in history and "%nanobanana history --since 2h --format markdown" in history
    assert "load_dataset" in export


# -- wait -------------------------------------------------------------------------------------


def test_wait_counts_only_the_tasks_it_waited_for(shell, emulator, capsys):
    for n in range(3):
        assert shell.run_cell(f"%%nanobanana\nalready done {n}").success
    assert shell.run_cell("%%nanobanana --no-wait -o late\nstill running").success
    result, out = out_of(shell, capsys, "%nanobanana wait")
    assert result.success
    assert out.strip() == "waited for 1 task: 1 done, 0 pending, 0 failed"
    assert shell.user_ns["late"].status == "succeeded"


def test_wait_with_nothing_pending_says_so(shell, emulator, capsys):
    assert shell.run_cell("%%nanobanana\ndone before").success
    _, out = out_of(shell, capsys, "%nanobanana wait")
    assert out.strip() == "no pending tasks in this kernel; nothing to wait for"


def test_wait_timeout_says_that_it_stopped_waiting(shell, emulator, capsys):
    emulator.latency = None  # never finishes by itself
    assert shell.run_cell("%%nanobanana --no-wait -o slow\na slow one").success
    result, out = out_of(shell, capsys, "%nanobanana wait --timeout 1")
    assert result.success
    assert out.strip() == (
        "stopped waiting after 1 s for 1 task: 0 done, 1 pending, 0 failed; the pending ones go on (%nanobanana wait)"
    )
    assert not shell.user_ns["slow"].done


# -- sweeps -----------------------------------------------------------------------------------


def test_sweep_summary_shows_each_failure_with_its_reason(shell, emulator, capsys):
    shell.user_ns["things"] = ["a kite", "a forbidden kite", "a boat"]
    result, out = out_of(shell, capsys, "%%nanobanana --sweep thing=@things\n{thing} over the sea")
    assert result.success
    assert "sweep: thing (3) = 3 · 2 succeeded · 1 failed · 0 pending" in out
    assert "  thing=a forbidden kite: failed: flagged by content policy (GENERATE_FAILED, code 400)\n" in out


class _Cell:
    def __init__(self, n: int, state: TaskState) -> None:
        self.task_id, self.state, self.request = f"task{n:02d}", state, {"prompt": f"p{n}"}
        self.status = state.value
        self.error = "flagged by content policy (GENERATE_FAILED, code 400)" if state is TaskState.FAILED else None
        self.path = f"out/{n}.png" if state is TaskState.SUCCEEDED else None
        self.prompt, self.elapsed = f"p{n}", 1.0


def test_a_twelve_value_sweep_wraps_into_rows_of_six():
    axes = [("i", list(range(12)))]
    columns, rows = grid_shape(axes, 12)
    assert len(columns) == 6 and rows == [list(range(6)), list(range(6, 12))]
    cells = [_Cell(n, TaskState.FAILED if n in (2, 7) else TaskState.SUCCEEDED) for n in range(12)]
    markup = grid_html(axes, cells, {c.task_id: b"jpeg" for c in cells})
    assert markup.count("<tr>") == 1 + 2  # the header row and two rows of six
    assert "10 of 12 succeeded · 2 failed" in markup
    assert markup.count("flagged by content policy (GENERATE_FAILED, code 400)") == 2
    text = grid_text(axes, cells)
    assert "12 · 10 succeeded · 2 failed · 0 pending" in text
    assert "i=7: failed: flagged by content policy (GENERATE_FAILED, code 400)" in text


def test_two_axes_keep_the_last_as_columns():
    axes = [("a", ["x", "y"]), ("b", [1, 2, 3])]
    columns, rows = grid_shape(axes, 6)
    assert columns == ["b=1", "b=2", "b=3"] and rows == [[0, 1, 2], [3, 4, 5]]


# -- history ----------------------------------------------------------------------------------


def test_history_markdown_is_a_markdown_table_with_a_text_fallback(shell, emulator, monkeypatch):
    from nanobanana_magic.notebook import commands

    shown = []
    monkeypatch.setattr(commands, "display", lambda obj, raw=False: shown.append((obj, raw)))
    assert shell.run_cell("%%nanobanana -o g\na markdown row").success
    assert shell.run_cell("%nanobanana history --format markdown").success
    ((bundle, raw),) = shown
    assert raw and set(bundle) == {"text/markdown", "text/plain"}
    assert bundle["text/markdown"].startswith("| task_id | status |")
    assert shell.user_ns["g"].task_id in bundle["text/markdown"] and bundle["text/plain"] in bundle["text/markdown"]


def test_a_failed_rows_file_column_shows_the_whole_reason(shell, emulator, capsys):
    reason = "flagged by content policy because the prompt names a forbidden subject, see the policy page"
    emulator.fail_next(message=reason)
    shell.run_cell("%%nanobanana\na refused prompt")
    _, out = out_of(shell, capsys, "%nanobanana history")
    row = next(line for line in out.splitlines() if "failed" in line)
    assert row.rstrip().endswith(f"{reason} (GENERATE_FAILED, code 400)")


def test_history_and_export_when_output_dir_is_a_file_are_one_line_errors(shell, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    magics_of(shell).output_dir = str(tmp_path / "a-file")
    for line in (
        "%nanobanana history",
        "%nanobanana history --format json",
        "%nanobanana export x.csv",
        "%nanobanana verify",
    ):
        result = shell.run_cell(line)
        assert isinstance(result.error_in_exec, NanoBananaError), line
        message = str(result.error_in_exec)
        assert "\n" not in message and "is a file, not a folder" in message


# -- progress ---------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = _Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", fake)
    return fake


def _report(total: int, ended: int, started: float, note: str = "") -> BatchProgress:
    return BatchProgress(total, submitted=min(total, ended + 2), done=ended, started=started, note=note)


def test_piped_progress_prints_separate_lines_at_a_bounded_rate(clock, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    progress = Progress(100, label="batch")
    for n in range(100):  # 100 reports in 20 s: one every 0.2 s
        clock.now += 0.2
        progress.update(_report(100, n, progress.last.started))
    progress.update(_report(100, 100, progress.last.started))
    progress.update(_report(100, 100, progress.last.started))  # a late report says nothing new
    progress.finish()
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "\r" not in out
    assert all(line.startswith("batch: ") for line in lines)
    assert 4 <= len(lines) <= 2 + 20 / progress_module.PIPE_EVERY
    assert sum("100/100" in line for line in lines) == 1


def test_terminal_progress_draws_nothing_after_finish(clock, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    progress = Progress(3, label="sweep")
    progress.update(_report(3, 1, progress.last.started))
    progress.update(_report(3, 3, progress.last.started))
    progress.finish()
    print("sweep: the summary")
    clock.now += 10
    progress.update(_report(3, 3, progress.last.started))  # a task's late listener
    out = capsys.readouterr().out
    assert out.endswith("\nsweep: the summary\n")
    assert out.count("3/3") == 2  # drawn when complete, and once more by finish before its newline


class _Generation:
    """Just enough of a Generation for run_batch: ends at once, keeps its listeners."""

    def __init__(self) -> None:
        self.listeners = []
        self.status, self.done = "succeeded", True

    def add_listener(self, listener) -> None:
        self.listeners.append(listener)


def test_a_batch_reports_nothing_after_it_returns():
    made: list[_Generation] = []
    heard: list[BatchProgress] = []

    def submit(request):
        made.append(_Generation())
        return made[-1]

    class Request:
        def to_body(self):
            return {}

    run_batch([Request() for _ in range(3)], submit, on_progress=heard.append)
    count = len(heard)
    for generation in made:
        for listener in generation.listeners:
            listener(generation)  # a late change (a refetch, a listener added late)
    assert len(heard) == count and heard[-1].ended == 3


def test_terminal_sweep_prints_no_progress_after_its_summary(shell, emulator, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    result, out = out_of(shell, capsys, "%%nanobanana --sweep resolution=1K,2K\na tidy terminal")
    assert result.success
    summary = out.index("sweep: resolution (2) = 2")
    assert "\r" not in out[summary:] and out.endswith("\n")
    assert "2/2 · 2 done" in out[:summary]


# -- interrupts -------------------------------------------------------------------------------


def test_an_interrupted_cell_says_the_same_in_a_terminal_as_in_a_kernel(shell, emulator, capsys, monkeypatch):
    from nanobanana_magic.notebook import live
    from nanobanana_magic.runtime.generation import Generation

    emulator.latency = None
    monkeypatch.setattr(Generation, "join", _interrupted)
    result, out = out_of(shell, capsys, "%%nanobanana --wait -o g\nan interrupted wait")
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    said = "stopped waiting; the task is still running: %nanobanana history, %nanobanana wait"
    terminal = next(line for line in out.splitlines() if "stopped waiting" in line)
    assert terminal.endswith(f"KeyboardInterrupt\x1b[0m: {said}")  # one line, like our errors

    shown = []

    class Bridge:  # what LiveOutput needs of a kernel
        in_kernel = True

        def update(self, handle, data, metadata):
            shown.append(data["text/plain"])

    monkeypatch.setattr(live, "display", lambda *args, **kwargs: None)
    live.LiveOutput(shell.user_ns["g"], Bridge(), 64, "jpeg").stopped_waiting()
    assert shown == [said]


def _interrupted(self, timeout=None):
    raise KeyboardInterrupt


def test_an_interrupted_wait_command_says_what_an_interrupted_cell_says(shell, emulator, capsys, monkeypatch):
    from nanobanana_magic.notebook.progress import stopped_text
    from nanobanana_magic.runtime.generation import Generation

    emulator.latency = None
    assert shell.run_cell("%%nanobanana --no-wait\nwaited, then interrupted").success
    monkeypatch.setattr(Generation, "join", _interrupted)
    result, out = out_of(shell, capsys, "%nanobanana wait")
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert any(line.endswith(f"KeyboardInterrupt\x1b[0m: {stopped_text()}") for line in out.splitlines())


def test_an_interrupted_batch_says_the_same_in_a_terminal_as_in_a_kernel(clock, capsys, monkeypatch):
    from nanobanana_magic.runtime.batch import INTERRUPTED

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    piped = Progress(5, label="batch")
    piped.update(_report(5, 1, piped.last.started, note=INTERRUPTED))
    piped.finish()
    text = capsys.readouterr().out
    expected = "stopped waiting; the tasks already submitted are still running: %nanobanana history, %nanobanana wait"
    assert text.rstrip().endswith(expected)
    kernel = Progress(5, label="batch", widget=True)  # the widget's text is the same line
    kernel.update(_report(5, 1, kernel.last.started, note=INTERRUPTED))
    assert expected in kernel._text.value


# -- a plain Python script ------------------------------------------------------------------------

SCRIPT = """
import json, sys
import nanobanana_magic

rows = [
    {"prompt": f"a script row {n}", "label": "cat" if n % 2 else "dog", "split": "test" if n == 3 else "train", "id": n}
    for n in range(6)
]
gens = nanobanana_magic.generate_many(rows, concurrency=2)
print(json.dumps({"status": [g.status for g in gens], "cached": [g.cached for g in gens]}))
print(nanobanana_magic.export(sys.argv[1], format="imagefolder"))
"""


def _run_script(tmp_path: Path, emulator, dest: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOBANANA_")}
    env.update(
        NANOBANANA_API_KEY=API_KEY, NANOBANANA_BASE_URL=emulator.base_url, NANOBANANA_OUTPUT_DIR=str(tmp_path / "out")
    )
    script = tmp_path / "make_dataset.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), str(dest)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_generate_many_and_export_work_in_a_plain_python_script(tmp_path, emulator):
    dest = tmp_path / "dataset"
    first = _run_script(tmp_path, emulator, dest)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert "\r" not in first.stdout and API_KEY not in first.stdout + first.stderr
    assert all(line.startswith("nanobanana: ") for line in lines[:-2])  # piped progress: whole lines
    assert json.loads(lines[-2]) == {"status": ["succeeded"] * 6, "cached": [False] * 6}
    assert lines[-1] == f"imagefolder export to {dest}: 6 added, 0 unchanged, 0 skipped"
    log = [json.loads(line) for line in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()]
    submitted = [r for r in log if r["event"] == "submitted"]
    assert [r["metadata"]["label"] for r in submitted] == ["dog", "cat", "dog", "cat", "dog", "cat"]
    test_rows = [json.loads(line) for line in (dest / "test" / "metadata.jsonl").read_text().splitlines()]
    assert [(r["id"], r["label"]) for r in test_rows] == [(3, "cat")]

    again = _run_script(tmp_path, emulator, dest)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-2])["cached"] == [True] * 6
    assert again.stdout.splitlines()[-1] == f"imagefolder export to {dest}: 0 added, 6 unchanged, 0 skipped"
    assert emulator.submit_count == 6


# -- make demo ----------------------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.timeout(300)
def test_demo_notebooks_each_keep_their_own_output_folder(tmp_path):
    import nbformat

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import run_notebooks
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    paths = []
    for name in ("first", "second"):
        cells = [
            "%load_ext nanobanana_magic",
            "%config NanoBananaMagics.poll_schedule = [[1e9, 0.1]]",
            f"%%nanobanana\nthe {name} notebook's own image",
            "%nanobanana history",
        ]
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        paths.append(tmp_path / f"{name}.ipynb")
        nbformat.write(notebook, paths[-1])
    build = tmp_path / "build"
    assert run_notebooks.main([*map(str, paths), "--build", str(build), "--latency", "0.1"]) == 0
    for name, other in (("first", "second"), ("second", "first")):
        log = (build / name / "nanobanana_outputs" / "runs.jsonl").read_text()
        assert f"the {name} notebook" in log and f"the {other} notebook" not in log
        history = nbformat.read(build / f"{name}.ipynb", as_version=4).cells[-1].outputs[0]["data"]["text/plain"]
        assert f"the {name} notebook" in history and f"the {other} notebook" not in history
        assert (build / f"{name}.html").is_file()


@pytest.mark.kernel
def test_in_a_kernel_markdown_history_renders_and_cell_help_needs_no_body(emulator, kernel_env, tmp_path):
    from kernel_helpers import SETUP, execute_notebook, new_notebook, outputs

    notebook = execute_notebook(
        new_notebook(
            SETUP, "%%nanobanana\na row for the table", "%nanobanana history --format markdown", "%%nanobanana --help"
        ),
        tmp_path,
        kernel_env,
    )
    history, cell_help = notebook.cells[2], notebook.cells[3]
    (shown,) = outputs(history, "display_data")
    assert shown.data["text/markdown"].startswith("| task_id | status |")
    assert shown.data["text/plain"] in shown.data["text/markdown"] and "a row for the table" in shown.data["text/plain"]
    (text,) = outputs(cell_help, "stream")
    assert text.text.startswith("usage: %%nanobanana") and not outputs(cell_help, "error")


def test_status_ticks_share_a_kernel_wide_budget_and_never_block():
    from nanobanana_magic.notebook.live import TickBudget

    now = [0.0]
    ticks = TickBudget(per_second=2, clock=lambda: now[0])
    assert [ticks.take() for _ in range(3)] == [True, True, False]  # a thousand status lines: most skip a tick
    now[0] += 0.5
    assert ticks.take() and not ticks.take()
    now[0] += 10.0
    assert sum(ticks.take() for _ in range(5)) == 2  # idle time does not bank more than a second's worth
