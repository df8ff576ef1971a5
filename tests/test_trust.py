"""Pay once, show the right image, keep the record true (issue 11), in real kernels through nbclient.

Each test stands for one finding of the issue (F1-F9) or one deliverable (D1-D4); the emulator
is the API, and its counters say what was paid for (`submit_count`), looked up and downloaded.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
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
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from nanobanana_magic.core.params import request_key
from nanobanana_magic.emulator import Emulator

pytestmark = pytest.mark.kernel

RAISES = "raises-exception"
PREVIEW = re.compile(r"data:image/(?:jpeg|png);base64,")  # a small PNG is its own preview
MAGICS = "magics = get_ipython().magics_manager.registry['NanoBananaMagics']"
RESEARCH = Path(__file__).resolve().parents[1] / "notebooks" / "reproducible-research.ipynb"


# -- reading what a kernel showed ------------------------------------------------------------


def shown(cell: NotebookNode) -> dict:
    """The task metadata of the cell's one generation output, which must be an embedded preview."""
    outputs = task_outputs(cell)
    assert len(outputs) == 1, cell.outputs
    output = outputs[0]
    assert PREVIEW.search(output.data.get("text/html", "")), output.data["text/plain"]
    task = dict(output.metadata[TASK_MIME])
    assert task["status"] == "succeeded", task
    task["text"] = output.data["text/plain"]
    return task


def one_line_error(cell: NotebookNode, ename: str) -> str:
    """The cell failed with a single `ename: message` line and no stack frames; returns the message."""
    error = single_error(cell)
    assert error.ename == ename, error
    assert len(error.traceback) == 1, error.traceback
    line = error.traceback[0]
    assert "\n" not in line.strip() and "Traceback" not in line and ".py" not in line, line
    return error.evalue


def run_log(output_dir: Path) -> list[dict]:
    path = output_dir / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def submitted(output_dir: Path) -> list[dict]:
    return [r for r in run_log(output_dir) if r["event"] == "submitted"]


def pending_ids(output_dir: Path) -> set[str]:
    """Task ids the run log has a submit for and no outcome: what was in flight when a kernel died."""
    records = run_log(output_dir)
    ended = {r["task_id"] for r in records if r["event"] == "finished"}
    return {r["task_id"] for r in records if r["event"] == "submitted"} - ended


def kill_when(client: NotebookClient, condition: Callable[[], bool], timeout: float = 30) -> threading.Thread:
    """SIGKILL the client's kernel once `condition` holds (a crash, an OOM kill), from a helper thread."""

    def kill() -> None:
        wait_until(lambda: client.km is not None and condition(), timeout=timeout, what="the moment to kill")
        process = client.km.provisioner.process  # type: ignore[union-attr]
        os.kill(process.pid, signal.SIGKILL)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def run_all_until_killed(
    notebook: NotebookNode, cwd: Path, env: dict[str, str], condition: Callable[[], bool], timeout: float = 60
) -> None:
    """Run All in a fresh kernel that is SIGKILLed once `condition` holds; returns when it is dead."""
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(cwd)}}
    )
    killer = kill_when(client, condition, timeout)
    with pytest.raises(DeadKernelError):
        client.execute(env=env)
    killer.join(5)


# -- F1. the cache belongs to one API -----------------------------------------------------------

APPLE = "%%nanobanana -a 1:1\na red apple on a blue plate"


def test_a_cache_entry_of_another_api_never_answers_a_cell(emulator, kernel_env, tmp_path):
    with Emulator(latency=0.1, api_key=API_KEY) as other, live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        first = shown(kernel.run(APPLE))
        kernel.run(f"%config NanoBananaMagics.base_url = {other.base_url!r}")
        elsewhere = shown(kernel.run(APPLE))
        kernel.run(f"%config NanoBananaMagics.base_url = {emulator.base_url!r}")
        back = shown(kernel.run(APPLE))
        other_submits, other_url = other.submit_count, other.base_url

    assert not first["cached"] and not elsewhere["cached"] and "cached" not in elsewhere["text"]
    assert other_submits == 1 and elsewhere["task_id"] != first["task_id"]
    assert back["cached"] and back["task_id"] == first["task_id"]
    assert emulator.submit_count == 1
    apis = {r["task_id"]: r["api"] for r in submitted(tmp_path / "out")}
    assert apis == {first["task_id"]: emulator.base_url, elsewhere["task_id"]: other_url}


# -- F2. an altered file is never shown ----------------------------------------------------------

PEAR = "%%nanobanana -o x\na green pear on a windowsill"
PANEL = f"""\
from nanobanana_magic.notebook.control_panel import Panel, PanelContext
{MAGICS}
panel = Panel(PanelContext.of(magics))
panel.show(x)
print([tile.label.value for tile in panel._tiles.values()])
print("images:", sum(1 for tile in panel._tiles.values() for w in tile.box.children if type(w).__name__ == "Image"))
print("status:", panel.status.value)
print("selected:", panel.selected)
"""


def test_an_altered_saved_file_is_never_shown_and_is_fetched_again_by_id(emulator, kernel_env, tmp_path):
    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        task = shown(kernel.run(PEAR))
        saved = Path(task["path"])
        saved.write_bytes(os.urandom(4096))
        verified = kernel.run("%nanobanana verify", RAISES)
        image = kernel.run("x.image", RAISES)
        panel = kernel.run(PANEL)
        fetched = shown(kernel.run(f"%nanobanana fetch {task['task_id']} -o y"))
        fresh = kernel.run("print(y.path.exists(), y.image.size, y.path != x.path)")
        Path(fetched["path"]).write_bytes(os.urandom(4096))
        rerun = shown(kernel.run(PEAR))

    assert "altered" in plain_text(verified) and task["task_id"] in plain_text(verified)
    assert "altered" in one_line_error(image, "DownloadError")
    panel_text = plain_text(panel)
    assert "altered" in panel_text and "images: 0" in panel_text and "selected: None" in panel_text
    assert "Traceback" not in panel_text
    assert fetched["task_id"] == task["task_id"] and Path(fetched["path"]) != saved
    assert plain_text(fresh).split()[0] == "True"
    assert rerun["task_id"] == task["task_id"] and "altered" in rerun["text"] and "no new task" in rerun["text"]
    assert emulator.submit_count == 1  # both repairs: record-info and a download, never a submit
    assert emulator.download_count(task["task_id"]) == 3
    events = [r["event"] for r in run_log(tmp_path / "out")]
    assert events == ["submitted", "finished", "restored", "restored"]


# -- F3. a deleted cached file: fetched again by id, or paid again with a one-line notice ---------

LAMP = [SETUP, "%%nanobanana -r 2K\na brass lamp in a dark room"]


def test_a_deleted_cached_file_is_fetched_again_without_a_submit(emulator, kernel_env, tmp_path):
    first = shown(execute_notebook(new_notebook(*LAMP), tmp_path, kernel_env).cells[1])
    Path(first["path"]).unlink()
    again = shown(execute_notebook(new_notebook(*LAMP), tmp_path, kernel_env).cells[1])

    assert again["task_id"] == first["task_id"] and Path(again["path"]).exists()
    assert "missing" in again["text"] and "no new task" in again["text"]
    assert emulator.submit_count == 1 and emulator.download_count(first["task_id"]) == 2


def test_a_deleted_cached_file_the_api_forgot_is_paid_again_with_a_one_line_notice(emulator, kernel_env, tmp_path):
    first = shown(execute_notebook(new_notebook(*LAMP), tmp_path, kernel_env).cells[1])
    Path(first["path"]).unlink()
    emulator.reset()  # the service no longer knows the task
    again = shown(execute_notebook(new_notebook(*LAMP), tmp_path, kernel_env).cells[1])

    assert again["task_id"] != first["task_id"] and emulator.submit_count == 1
    notice = [line for line in again["text"].splitlines() if first["task_id"] in line]
    assert len(notice) == 1 and "missing" in notice[0] and "new task" in notice[0], again["text"]


# -- D1. a cache hit is checked before it is shown; a repair pays only when the API cannot give it --


def test_a_deleted_cached_file_whose_result_url_expired_is_paid_again_with_a_one_line_notice(
    emulator, kernel_env, tmp_path
):
    first = shown(execute_notebook(new_notebook(*LAMP), tmp_path, kernel_env).cells[1])
    Path(first["path"]).unlink()
    emulator.inject("download", "status", status=410)  # the service knows the task; its file host forgot
    again = shown(execute_notebook(new_notebook(*LAMP), tmp_path, kernel_env).cells[1])

    assert again["task_id"] != first["task_id"] and emulator.submit_count == 2
    notice = [line for line in again["text"].splitlines() if first["task_id"] in line]
    assert len(notice) == 1 and "expired" in notice[0] and "new task" in notice[0], again["text"]


def test_an_outage_while_repairing_a_cached_file_pays_nothing_and_fails_in_one_line(emulator, kernel_env, tmp_path):
    first = shown(execute_notebook(new_notebook(*LAMP), tmp_path, kernel_env).cells[1])
    Path(first["path"]).unlink()
    emulator.inject("poll", "status", count=50, status=500)  # record-info fails through every retry
    notebook = new_notebook(LAMP[0], code_cell(LAMP[1], RAISES))
    again = execute_notebook(notebook, tmp_path, kernel_env).cells[1]

    message = one_line_error(again, "ServiceUnavailableError")
    assert first["task_id"] in message and "nothing was submitted" in message and "--force" in message
    assert emulator.submit_count == 1  # an outage is not "the API no longer has it"


# -- F4. a Run All after a kernel kill pays nothing twice ----------------------------------------

THREE_CELLS = [
    SETUP,
    "%%nanobanana\na first lantern",
    "%%nanobanana\na second lantern",
    "%%nanobanana\na third lantern",
]


def test_run_all_after_a_kernel_kill_resumes_the_task_in_flight(emulator, kernel_env, tmp_path):
    emulator.latency = None  # tasks end on emulator.finish()

    def finish_the_first() -> None:
        wait_until(lambda: len(emulator.tasks) == 1, timeout=30, what="the first submit")
        emulator.finish(next(iter(emulator.tasks)))

    finisher = threading.Thread(target=finish_the_first, daemon=True)
    finisher.start()
    # Killed once the second submit is in the run log: its cell now waits for a task that has not ended.
    run_all_until_killed(
        new_notebook(*THREE_CELLS), tmp_path, kernel_env, lambda: len(submitted(tmp_path / "out")) == 2
    )
    finisher.join(5)
    (in_flight,) = pending_ids(tmp_path / "out")
    assert emulator.submit_count == 2

    emulator.latency = 0.2  # the third cell's new task ends by itself; the one in flight still waits
    polls = emulator.poll_count(in_flight)

    def finish_once_polled() -> None:
        wait_until(lambda: emulator.poll_count(in_flight) > polls, timeout=30, what="the new kernel to poll")
        emulator.finish(in_flight)

    finisher = threading.Thread(target=finish_once_polled, daemon=True)
    finisher.start()
    again = execute_notebook(new_notebook(*THREE_CELLS), tmp_path, kernel_env)
    finisher.join(5)

    cached, resumed, new = (shown(again.cells[n]) for n in (1, 2, 3))
    assert cached["cached"]
    assert resumed["task_id"] == in_flight and "resumed" in resumed["text"]
    assert not new["cached"] and "resumed" not in new["text"]
    assert emulator.submit_count == 3  # only the third cell, never submitted before the kill, paid
    assert [r["task_id"] for r in submitted(tmp_path / "out")].count(in_flight) == 1


def test_a_pending_task_the_api_does_not_know_is_not_attached_to_forever(emulator, kernel_env, tmp_path):
    """A kernel died a minute ago with a task pending, and the API has no such task (an emulator
    restarted on the same port): the re-run pays for a new task and says why, instead of failing
    until `timeout` has passed."""
    out = tmp_path / "out"
    out.mkdir()
    body = {
        "prompt": "a first lantern",
        "imageUrls": [],
        "aspectRatio": "auto",
        "resolution": "1K",
        "googleSearch": False,
        "outputFormat": "png",
    }
    lost = "0123456789abcdef0123456789abcdef"
    line = {"event": "submitted", "task_id": lost, "t": time.time() - 60, "request": body, "api": emulator.base_url}
    line["key"] = request_key(emulator.base_url, body)
    (out / "runs.jsonl").write_text(json.dumps(line) + "\n")
    again = shown(execute_notebook(new_notebook(*THREE_CELLS[:2]), tmp_path, kernel_env).cells[1])

    assert again["task_id"] != lost and emulator.submit_count == 1
    notice = [text for text in again["text"].splitlines() if lost in text]
    assert len(notice) == 1 and "unknown to the API" in notice[0] and "new task" in notice[0]


# -- D2. two kernels running one notebook at once attach to one task per request -----------------


def test_two_kernels_running_the_same_notebook_at_once_pay_once_per_request(emulator, kernel_env, tmp_path):
    emulator.latency = 1.0
    notebook = new_notebook(*THREE_CELLS)
    results: dict[str, NotebookNode] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def run(name: str) -> None:
        try:
            start.wait(10)
            results[name] = execute_notebook(copy.deepcopy(notebook), tmp_path, kernel_env)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    runners = [threading.Thread(target=run, args=(name,), daemon=True) for name in ("a", "b")]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(60)

    assert not failures, failures
    assert emulator.submit_count == 3
    for index in (1, 2, 3):
        a, b = shown(results["a"].cells[index]), shown(results["b"].cells[index])
        assert a["task_id"] == b["task_id"]
    texts = [shown(results[k].cells[i])["text"] for k in "ab" for i in (1, 2, 3)]
    assert any("resumed" in t for t in texts), texts  # the later kernel followed the earlier one's task
    events = [r["event"] for r in run_log(tmp_path / "out")]
    assert events.count("submitted") == events.count("finished") == 3 and len(events) == 6
    assert len(list((tmp_path / "out").glob("*.png"))) == 3  # one saved copy per task, not one per kernel


# -- F5. fetching never rewrites provenance -------------------------------------------------------

EXPORT = "%nanobanana export {name}"
PROVENANCE = ("submitted", "finished", "elapsed_s", "status", "request")


def test_fetch_of_a_deleted_file_keeps_the_recorded_times_and_status(emulator, kernel_env, tmp_path):
    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        task = shown(kernel.run("%%nanobanana\na clock tower at noon"))
        kernel.run(EXPORT.format(name="before.json"))
    Path(task["path"]).unlink()
    with live_kernel(tmp_path, kernel_env) as kernel:  # a later session: the time since submit has grown
        kernel.run(SETUP)
        fetched = shown(kernel.run(f"%nanobanana fetch {task['task_id']}"))
        kernel.run(EXPORT.format(name="after.json"))

    before, after = (json.loads((tmp_path / n).read_text())[0] for n in ("before.json", "after.json"))
    assert {k: before[k] for k in PROVENANCE} == {k: after[k] for k in PROVENANCE}
    assert Path(after["file"]).exists()  # the same name again when the fetch falls in the same second
    assert fetched["elapsed"] == task["elapsed"] == before["elapsed_s"]
    assert f"{task['elapsed']:.1f} s" in fetched["text"]
    events = [r["event"] for r in run_log(tmp_path / "out")]
    assert events == ["submitted", "finished", "restored"] and emulator.submit_count == 1


# -- D3. the run log is history: every caption shows the task's own duration ---------------------


DEAD_FOR = 2.5  # seconds between the submit and the next kernel's first look


def test_captions_show_the_tasks_own_duration_not_the_time_since_it_was_submitted(emulator, kernel_env, tmp_path):
    emulator.latency = None
    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        kernel.run("%%nanobanana --no-wait\na sundial in the rain")
        (task_id,) = emulator.tasks
        kernel.kill()  # the kernel dies before it saw the task end
    assert emulator.finish(task_id)
    own = emulator.done_time(task_id) - emulator.tasks[task_id].created
    # The subject of this test is time passing while no kernel runs: the task ended long before
    # anyone looked. Nothing to wait for but the clock, so the clock it is.
    submitted_t = submitted(tmp_path / "out")[0]["t"]
    wait_until(lambda: time.time() - submitted_t > DEAD_FOR, timeout=DEAD_FOR + 1, what="the dead time")
    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        resumed = shown(kernel.run("%%nanobanana\na sundial in the rain"))
        stored = shown(kernel.run(f"%nanobanana fetch {task_id}"))
        kernel.run(EXPORT.format(name="provenance.json"))

    (record,) = json.loads((tmp_path / "provenance.json").read_text())
    finished = next(r for r in run_log(tmp_path / "out") if r["event"] == "finished")
    since_submit = finished["t"] - submitted_t
    assert since_submit > DEAD_FOR
    assert resumed["elapsed"] <= own + 1.0 < since_submit  # the service's times are whole seconds
    assert resumed["elapsed"] == stored["elapsed"] == finished["elapsed"] == record["elapsed_s"]
    assert f"{resumed['elapsed']:.1f} s" in resumed["text"] and f"{resumed['elapsed']:.1f} s" in stored["text"]


# -- F6. %nanobanana resume after a killed sweep -------------------------------------------------


def test_resume_after_a_killed_three_task_sweep_shows_all_three_results(emulator, kernel_env, tmp_path):
    emulator.latency = None
    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        kernel.run("%%nanobanana --no-wait --sweep aspect_ratio=1:1,16:9,4:3\na kite over the dunes")
        wait_until(lambda: emulator.submit_count == 3, what="the sweep's three submits")
        wait_until(lambda: len(pending_ids(tmp_path / "out")) == 3, what="three submits in the run log")
        kernel.kill()
    emulator.finish_all()
    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        history = plain_text(kernel.run("%nanobanana history"))
        resumed = kernel.run("%nanobanana resume")
        after = plain_text(kernel.run("%nanobanana history"))

    assert "%nanobanana resume" in history and history.count("pending") >= 3
    assert "resumed 3 pending task(s)" in plain_text(resumed)
    outputs = task_outputs(resumed)
    assert len(outputs) == 3
    assert all(PREVIEW.search(o.data["text/html"]) for o in outputs), [o.data["text/plain"] for o in outputs]
    ratios = sorted(o.metadata[TASK_MIME]["request"]["aspectRatio"] for o in outputs)
    assert ratios == ["16:9", "1:1", "4:3"]
    assert "pending" not in after and emulator.submit_count == 3


def test_interrupting_resume_stops_waiting_in_one_line_and_the_tasks_stay_pending(emulator, kernel_env, tmp_path):
    emulator.latency = None
    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        kernel.run("%%nanobanana --no-wait\na kite in the fog")
        kernel.kill()
    (task_id,) = emulator.tasks
    with live_kernel(tmp_path, kernel_env, timeout=20) as kernel:
        kernel.run(SETUP)
        polls = emulator.poll_count(task_id)

        def interrupt_once_polled() -> None:
            wait_until(lambda: emulator.poll_count(task_id) > polls + 2, what="resume to poll the task")
            kernel.interrupt()

        interrupter = threading.Thread(target=interrupt_once_polled, daemon=True)
        interrupter.start()
        stopped = kernel.run("%nanobanana resume", RAISES)
        interrupter.join(5)
        history = plain_text(kernel.run("%nanobanana history"))

    assert "stopped waiting" in one_line_error(stopped, "KeyboardInterrupt")
    assert "pending" in next(line for line in history.splitlines() if task_id in line)
    assert emulator.submit_count == 1


# -- F7. Generation.path is absolute -------------------------------------------------------------


def test_a_generation_still_finds_its_file_after_cd_elsewhere(emulator, kernel_env, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        kernel.run("%config NanoBananaMagics.output_dir = 'relative_out'")
        shown(kernel.run("%%nanobanana -o g\na compass on a map"))
        kernel.run("%cd elsewhere")
        checked = plain_text(kernel.run("print(g.path.is_absolute(), g.path.exists(), g.image.size, g.status)"))
    assert checked.split()[:2] == ["True", "True"] and checked.split()[-1] == "succeeded"
    assert (tmp_path / "relative_out" / "runs.jsonl").exists()


# -- F8. save() writes the format its suffix names -----------------------------------------------


def test_save_converts_to_the_suffix_format_and_refuses_an_unknown_one(emulator, kernel_env, tmp_path):
    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        shown(kernel.run("%%nanobanana -o g -f png\na teapot with a chipped spout"))
        kernel.run("g.save('copy.jpg'); g.save('copy.webp'); g.save('copy.png')")
        gif = kernel.run("g.save('x.gif')", RAISES)

    assert (tmp_path / "copy.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    webp = (tmp_path / "copy.webp").read_bytes()
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    assert (tmp_path / "copy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    message = one_line_error(gif, "InvalidRequestError")
    assert ".gif" in message and ".jpg" in message and ".png" in message
    assert not (tmp_path / "x.gif").exists()


# -- F9. a sweep that would not change the request is refused ------------------------------------

SWEEPS = {
    "prompt": ("%%nanobanana --sweep prompt=a,b\na lighthouse", ["prompt", "{variable}"]),
    "no_variable": ("%%nanobanana --sweep colour=red,blue\na lighthouse", ["colour", "variable"]),
    "twice": (
        "%%nanobanana --sweep aspect_ratio=1:1,16:9 --sweep aspect_ratio=4:3\na {colour} lighthouse",
        ["aspect_ratio", "twice"],
    ),
}


def test_sweeps_that_change_nothing_are_refused_and_send_nothing(emulator, kernel_env, tmp_path):
    cells = [code_cell(source, RAISES) for source, _ in SWEEPS.values()]
    executed = execute_notebook(new_notebook(SETUP, "colour = 'red'", *cells), tmp_path, kernel_env)
    for cell, (_, words) in zip(executed.cells[2:], SWEEPS.values()):
        message = one_line_error(cell, "InvalidRequestError")
        assert all(word in message for word in words), message
    assert emulator.submit_count == 0 and not emulator.requests


# -- D4. spending caps ---------------------------------------------------------------------------

PRICES = '%config NanoBananaMagics.credit_costs = {"1K": 4, "2K": 6, "4K": 12}'


def test_max_credits_refuses_an_over_budget_cell_and_sweep_and_restarts_when_set_again(emulator, kernel_env, tmp_path):
    with live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        kernel.run(PRICES)
        kernel.run("%config NanoBananaMagics.max_credits = 10")
        dry = plain_text(kernel.run("%%nanobanana --dry-run -r 2K\na budget apple"))
        shown(kernel.run("%%nanobanana\na budget apple"))  # 4
        shown(kernel.run("%%nanobanana -r 2K\na budget pear"))  # 6: the budget is spent
        before = emulator.submit_count, len(emulator.requests)
        over_cell = kernel.run("%%nanobanana\na budget plum", RAISES)
        over_sweep = kernel.run("%%nanobanana --sweep resolution=1K,2K\na budget fig", RAISES)
        spent = emulator.submit_count, len(emulator.requests)
        dry_left = plain_text(kernel.run("%%nanobanana --dry-run\na budget plum"))
        kernel.run("%config NanoBananaMagics.max_credits = 10")  # a new budget from now
        renewed = shown(kernel.run("%%nanobanana\na budget plum"))

    assert "would cost 6 credits" in dry and "10 of the 10-credit budget left" in dry
    for cell in (over_cell, over_sweep):
        message = one_line_error(cell, "BudgetExceededError")
        assert "nothing was sent" in message and "10-credit budget" in message
    assert spent == before  # neither a submit nor any other request
    assert "would cost 4 credits" in dry_left and "0 of the 10-credit budget left" in dry_left
    assert not renewed["cached"] and emulator.submit_count == 3
    assert emulator.credits == 10**9 - 14


def test_max_credits_without_credit_costs_learns_the_price_from_the_balance(emulator, kernel_env, tmp_path):
    costs = tmp_path / "out" / ".credit-costs.json"  # where learned prices are kept, per API
    with Emulator(latency=0.1, api_key=API_KEY) as other, live_kernel(tmp_path, kernel_env) as kernel:
        kernel.run(SETUP)
        kernel.run("%config NanoBananaMagics.max_credits = 6")
        unknown = plain_text(kernel.run("%%nanobanana --dry-run\na learned apple"))
        shown(kernel.run("%%nanobanana\na learned apple"))
        credit_calls = sum(1 for r in emulator.requests if r.phase == "credits")
        learned = json.loads(costs.read_text())
        known = plain_text(kernel.run("%%nanobanana --dry-run\na learned pear"))
        over = kernel.run("%%nanobanana\na learned pear", RAISES)
        kernel.run(f"%config NanoBananaMagics.base_url = {other.base_url!r}")
        elsewhere = plain_text(kernel.run("%%nanobanana --dry-run\na learned pear"))

    assert "unknown price" in unknown and "6 of the 6-credit budget left" in unknown
    assert credit_calls == 2  # the balance just before and just after the one paid submit
    assert learned == {emulator.base_url: {"1K": {"cost": 4, "t": learned[emulator.base_url]["1K"]["t"]}}}
    assert "would cost 4 credits" in known and "2 of the 6-credit budget left" in known
    message = one_line_error(over, "BudgetExceededError")
    assert "4 credits" in message and "2 of the 6-credit budget" in message and "nothing was sent" in message
    assert "unknown price" in elsewhere  # another API's prices are its own
    assert emulator.submit_count == 1


# -- the figure: reproducible-research.ipynb, killed mid-run, run again ---------------------------


@pytest.mark.timeout(300)
def test_run_all_of_the_research_notebook_after_a_kill_pays_nothing_twice(emulator, tmp_path):
    """The figure of the issue's closing note: a Run All killed in the middle of the sweep, run again."""
    emulator.latency = None  # tasks end when `finisher` says so
    out = tmp_path / "out"
    env = kernel_environment(emulator.base_url, out, API_KEY)
    notebook = nbformat.read(RESEARCH, as_version=4)
    done_before_kill = 5  # the plate and four sweep tasks; the sweep's next four stay in flight
    stop = threading.Event()

    def finisher() -> None:
        finished: set[str] = set()
        while len(finished) < done_before_kill and not stop.is_set():
            for task_id in list(emulator.tasks)[:done_before_kill]:
                if task_id not in finished and emulator.finish(task_id):
                    finished.add(task_id)
            stop.wait(0.02)

    helper = threading.Thread(target=finisher, daemon=True)
    helper.start()
    in_flight_logged = done_before_kill + 4  # the sweep's four slots all wait: nothing more can be paid

    def steady() -> bool:
        return len(submitted(out)) == emulator.submit_count == in_flight_logged

    try:
        run_all_until_killed(copy.deepcopy(notebook), tmp_path, env, steady, timeout=240)
    finally:
        stop.set()
        helper.join(5)
    paid_before = emulator.submit_count
    in_flight = pending_ids(out)
    keys_before = {r["key"] for r in submitted(out)}
    emulator.latency = 0.2  # new tasks end by themselves; the four in flight end as the new kernel polls
    emulator.finish_all()

    again = execute_notebook(copy.deepcopy(notebook), tmp_path, env, timeout=240)
    records = submitted(out)
    new_keys = [r["key"] for r in records[len(keys_before) :]]
    resumed = sum(plain_text(c).count("succeeded (resumed)") for c in again.cells if c.cell_type == "code")
    print(
        f"\nreproducible-research.ipynb: killed after {paid_before} submits, {len(in_flight)} of them in flight; "
        f"the second Run All submitted {emulator.submit_count - paid_before} new task(s) "
        f"({len(set(new_keys) & keys_before)} for a request submitted before the kill) and resumed {resumed}"
    )
    assert paid_before == in_flight_logged and len(in_flight) == 4
    assert not set(new_keys) & keys_before  # nothing in flight (or done) was paid for again
    assert len(records) == len({r["key"] for r in records}) == emulator.submit_count
    assert resumed == len(in_flight)
    errors = [o for c in again.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
