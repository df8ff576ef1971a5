"""Running cells in real Jupyter kernels through nbclient (for tests/test_kernels.py and benchmarks).

nbclient sends execute requests with `allow_stdin=False`, so `wait="auto"` blocks there, as in
any headless run. The kernel inherits the environment given here, which points it at an emulator.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbformat import NotebookNode

TASK_MIME = "application/vnd.nanobanana.task+json"
FAST_POLLING = "%config NanoBananaMagics.poll_schedule = [[1e9, 0.1]]"
SETUP = "%load_ext nanobanana_magic\n" + FAST_POLLING
ENV_NAMES = ("NANOBANANA_API_KEY", "NANOBANANA_BASE_URL", "NANOBANANA_OUTPUT_DIR")


def kernel_environment(base_url: str, output_dir: Path, api_key: str | None) -> dict[str, str]:
    """This process's environment with the NANOBANANA_* variables set (the key left out when None)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    env.update(NANOBANANA_BASE_URL=base_url, NANOBANANA_OUTPUT_DIR=str(output_dir))
    if api_key is not None:
        env["NANOBANANA_API_KEY"] = api_key
    return env


def code_cell(source: str, *tags: str) -> NotebookNode:
    """A code cell, tagged e.g. `raises-exception`."""
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def new_notebook(*cells: str | NotebookNode) -> NotebookNode:
    """A notebook of code cells (strings become untagged cells)."""
    return nbformat.v4.new_notebook(cells=[code_cell(c) if isinstance(c, str) else c for c in cells])


def execute_notebook(
    notebook: NotebookNode,
    cwd: Path,
    env: dict[str, str],
    *,
    timeout: float = 60,
    on_cell_executed: Callable[..., Any] | None = None,
) -> NotebookNode:
    """Execute all cells in a fresh kernel started in `cwd` with `env`; returns the notebook
    after a JSON round trip (what a saved file holds). Raises CellExecutionError like nbclient."""
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(cwd)}}
    )
    if on_cell_executed is not None:
        client.on_cell_executed = on_cell_executed
    client.execute(env=env)
    return nbformat.reads(nbformat.writes(notebook), as_version=4)


class LiveKernel:
    """One kernel driven cell by cell, for flows that act between cells (kill, interrupt)."""

    def __init__(self, client: NotebookClient) -> None:
        self.client = client

    @property
    def notebook(self) -> NotebookNode:
        return self.client.nb

    def run(self, source: str, *tags: str) -> NotebookNode:
        """Append a cell and execute it; returns the cell with its outputs.
        Raises CellExecutionError when it fails unless tagged `raises-exception`."""
        cell = code_cell(source, *tags)
        self.notebook.cells.append(cell)
        self.client.execute_cell(cell, len(self.notebook.cells) - 1)
        return cell

    def interrupt(self) -> None:
        """SIGINT to the kernel, as the stop button does (the python3 kernel's interrupt mode is
        "signal"); safe from another thread, unlike nbclient's async kernel manager."""
        os.kill(self.client.km.provisioner.process.pid, signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL: the kernel dies at once, with no chance to clean up (a crash, an OOM kill)."""
        process = self.client.km.provisioner.process
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def live_kernel(cwd: Path, env: dict[str, str], *, timeout: float = 60) -> Iterator[LiveKernel]:
    """A fresh kernel in `cwd` with `env`, shut down (or cleaned up after a kill) on exit."""
    notebook = nbformat.v4.new_notebook()
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(cwd)}}
    )
    with client.setup_kernel(env=env):
        yield LiveKernel(client)


# -- reading outputs --------------------------------------------------------------------


def outputs(cell: NotebookNode, output_type: str | None = None) -> list[NotebookNode]:
    """The cell's outputs, optionally of one type (display_data, error, stream, ...)."""
    return [o for o in cell.get("outputs", []) if output_type is None or o.output_type == output_type]


def task_outputs(cell: NotebookNode) -> list[NotebookNode]:
    """Outputs that show a generation (they carry the task metadata)."""
    return [o for o in outputs(cell) if TASK_MIME in o.get("metadata", {})]


def plain_text(cell: NotebookNode) -> str:
    """Every text the cell shows: streams, text/plain of rich outputs, error lines."""
    parts = []
    for output in outputs(cell):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.extend(output.traceback)
        else:
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def single_error(cell: NotebookNode) -> NotebookNode:
    """The cell's only error output."""
    errors = outputs(cell, "error")
    assert len(errors) == 1, f"expected one error output, got {cell.outputs}"
    return errors[0]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` until true; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        pause.wait(0.02)
