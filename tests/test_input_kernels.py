"""Bad input in real kernels (nbclient, as papermill runs them): refused in one line, nothing sent."""

from __future__ import annotations

import threading

import pytest
from kernel_helpers import SETUP, code_cell, execute_notebook, live_kernel, new_notebook, plain_text
from nbclient.exceptions import CellExecutionError
from reliability_helpers import wait_until

RAISES = "raises-exception"


def _error(cell):
    (error,) = [o for o in cell.outputs if o.output_type == "error"]
    return error


@pytest.mark.kernel
def test_a_bad_config_value_stops_a_headless_run_with_one_line(emulator, kernel_env, tmp_path):
    notebook = new_notebook(SETUP, "%config NanoBananaMagics.timeout = -5", "%%nanobanana\nnever sent")
    with pytest.raises(CellExecutionError) as info:
        execute_notebook(notebook, tmp_path, kernel_env)
    assert "timeout -5 is not allowed; use a number of seconds above 0" in str(info.value)
    assert emulator.requests == []


@pytest.mark.kernel
def test_values_that_would_waste_a_paid_task_are_refused_and_nothing_is_sent(emulator, kernel_env, tmp_path):
    cells = [
        "%%nanobanana --timeout -5\na cat",
        "%config NanoBananaMagics.poll_schedule = [[60, 0]]",
        "%config NanoBananaMagics.credit_costs = {'8K': 'a lot'}",
        "%%nanobanana -c 0 --sweep resolution=1K,2K\na cat",
        "%%nanobanana --sweep colour=red,blue\na cat",
        "%%nanobanana --sweep aspect_ratio=1:1,16:9 --sweep aspect_ratio=4:3\na {x}",
        "%nanobanana login",
    ]
    notebook = new_notebook(SETUP, *(code_cell(c, RAISES) for c in cells))
    executed = execute_notebook(notebook, tmp_path, kernel_env)
    errors = [_error(cell) for cell in executed.cells[1:]]
    assert [e.ename for e in errors] == ["InvalidRequestError"] * len(cells)
    assert all(len(e.traceback) == 1 for e in errors)  # one line each, no stack
    assert "headless run" in errors[-1].evalue and "NANOBANANA_API_KEY" in errors[-1].evalue
    assert emulator.requests == []


@pytest.mark.kernel
def test_ctrl_c_in_nanobanana_wait_is_one_line_and_the_task_goes_on(emulator, kernel_env, tmp_path):
    emulator.latency = None
    with live_kernel(tmp_path, kernel_env, timeout=20) as kernel:
        kernel.run(SETUP)
        kernel.run("%%nanobanana --no-wait\na slow sunrise")

        def interrupt_once_polling() -> None:
            wait_until(lambda: emulator.poll_count() >= 2, what="the kernel to poll its task")
            kernel.interrupt()

        interrupter = threading.Thread(target=interrupt_once_polling, daemon=True)
        interrupter.start()
        waited = kernel.run("%nanobanana wait", RAISES)
        interrupter.join(5)
        (task_id,) = emulator.tasks
        history = plain_text(kernel.run("%nanobanana history"))
    error = _error(waited)
    assert error.ename == "KeyboardInterrupt" and len(error.traceback) == 1
    assert "stopped waiting" in error.evalue and "threading" not in "".join(error.traceback)
    assert "pending" in next(line for line in history.splitlines() if task_id in line)
    assert emulator.submit_count == 1


def test_damaged_run_log_lines_are_counted_and_history_says_so(shell, emulator, capsys):
    assert shell.run_cell("%%nanobanana\na lighthouse").success
    log = shell.magics_manager.registry["NanoBananaMagics"].session.store.log_path
    with open(log, "a", encoding="utf-8") as handle:
        handle.write("{this line was damaged\n")
    capsys.readouterr()
    assert shell.run_cell("%nanobanana history").success
    assert "1 damaged line(s) of runs.jsonl were skipped" in capsys.readouterr().out
