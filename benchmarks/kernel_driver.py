"""A real Jupyter kernel driven with jupyter_client, timed from the frontend's side.

`Kernel.execute` measures what a user waits for: from sending execute_request to receiving
execute_reply. A listener thread reads iopub and stamps (time.time()) every display message
that carries a generation's task metadata, so the moment a cell's image arrived at the
frontend is known per task.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client import KernelManager

TASK_MIME = "application/vnd.nanobanana.task+json"


@dataclass
class CellResult:
    """One executed cell: round trip seconds, reply status, what it printed and displayed."""

    seconds: float
    status: str
    stdout: str = ""
    error: str = ""
    task_ids: list[str] = field(default_factory=list)  # generations the cell displayed, in order


class Kernel:
    """A python3 kernel started in `cwd` with `env`; use as a context manager."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self._lock = threading.Lock()  # guards _by_parent, _idle, ended, updates
        self._by_parent: dict[str, list[dict]] = {}
        self._idle: dict[str, threading.Event] = {}
        self.ended: dict[str, tuple[float, str]] = {}  # task id -> (arrival time.time(), final status)
        self.updates: dict[str, int] = {}  # task id -> display messages received
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_iopub, name="bench-iopub", daemon=True)
        self._reader.start()

    def execute(self, code: str, timeout: float = 120.0) -> CellResult:
        """Run one cell; `seconds` is execute_request → execute_reply as the frontend sees it."""
        # Built here rather than by kc.execute so its id is known before any reply can arrive.
        content = {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": True,
            "stop_on_error": True,
        }  # allow_stdin as JupyterLab sends it
        message = self.kc.session.msg("execute_request", content)
        msg_id = message["header"]["msg_id"]
        with self._lock:
            idle = self._idle.setdefault(msg_id, threading.Event())
        started = time.perf_counter()
        self.kc.shell_channel.send(message)
        deadline = time.monotonic() + timeout
        while True:
            reply = self.kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        seconds = time.perf_counter() - started
        idle.wait(max(0.01, deadline - time.monotonic()))  # outputs come on iopub, before idle
        with self._lock:
            messages = self._by_parent.pop(msg_id, [])
            self._idle.pop(msg_id, None)
        return _cell_result(seconds, reply, messages)

    def run(self, code: str, timeout: float = 120.0) -> CellResult:
        """`execute`, raising if the cell failed."""
        result = self.execute(code, timeout)
        if result.status != "ok":
            raise RuntimeError(f"cell failed: {code[:60]!r}: {result.error}")
        return result

    def wait_ended(self, task_ids: list[str], timeout: float) -> None:
        """Until every task's final display update has arrived (RuntimeError after `timeout`)."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while not all(t in self.ended for t in task_ids):
            if time.monotonic() > deadline:
                missing = [t for t in task_ids if t not in self.ended]
                raise RuntimeError(f"{len(missing)} task(s) never showed their result, e.g. {missing[0]}")
            pause.wait(0.02)

    def cpu_seconds(self) -> float:
        """User + system CPU time the kernel process has used so far (from /proc)."""
        import os

        pid = self.km.provisioner.process.pid  # type: ignore[union-attr]
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self._stop.set()
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)
        self._reader.join(2)

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _read_iopub(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.kc.get_iopub_msg(timeout=0.2)
            except (Empty, TimeoutError):
                continue
            except Exception:  # channels closed under us on shutdown
                if self._stop.is_set():
                    return
                continue
            arrived = time.time()
            kind = message["msg_type"]
            meta = message["content"].get("metadata", {}).get(TASK_MIME) if kind.endswith("display_data") else None
            parent = message["parent_header"].get("msg_id", "")
            with self._lock:
                if meta is not None:
                    task_id = meta["task_id"]
                    self.updates[task_id] = self.updates.get(task_id, 0) + 1
                    if meta["status"] != "pending" and task_id not in self.ended:
                        self.ended[task_id] = (arrived, meta["status"])
                if parent in self._idle:
                    self._by_parent.setdefault(parent, []).append(message)
                    if kind == "status" and message["content"].get("execution_state") == "idle":
                        self._idle[parent].set()


def _cell_result(seconds: float, reply: dict, messages: list[dict]) -> CellResult:
    content = reply["content"]
    result = CellResult(seconds, content.get("status", "?"))
    if result.status == "error":
        result.error = f"{content.get('ename')}: {content.get('evalue')}"
    for message in messages:
        kind, body = message["msg_type"], message["content"]
        if kind == "stream" and body.get("name") == "stdout":
            result.stdout += body["text"]
        elif kind == "display_data" and TASK_MIME in body.get("metadata", {}):
            result.task_ids.append(body["metadata"][TASK_MIME]["task_id"])
    return result
