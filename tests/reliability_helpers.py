"""Helpers shared by the fault-matrix, soak and security tests."""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from nanobanana_magic.core.secret import as_key
from nanobanana_magic.session.settings import Settings

T = TypeVar("T")

FAST_SCHEDULE: tuple[tuple[float, float], ...] = ((1e9, 0.1),)
# Small backoff so retries cost milliseconds; backoff_max stays above 1 s so that a
# Retry-After of one second is honoured rather than capped.
FAST_CLIENT: dict[str, Any] = {
    "backoff": 0.01,
    "backoff_max": 2.0,
    "retries": 2,
    "connect_timeout": 2.0,
    "read_timeout": 5.0,
    "download_timeout": 5.0,
}


_SETTING_OF = {"backoff": "retry_backoff", "backoff_max": "retry_backoff_max"}


class SessionSettings:
    """`Settings` for a Session without IPython, pointed at an emulator, fast schedule and client."""

    @staticmethod
    def for_emulator(
        base_url: str, key: str, output_dir: str | Path, *, client_options: dict | None = None, **overrides: Any
    ) -> Settings:
        client = {_SETTING_OF.get(k, k): v for k, v in {**FAST_CLIENT, **(client_options or {})}.items()}
        values = {"timeout": 30.0, "cache": False, "poll_schedule": FAST_SCHEDULE, **client, **overrides}
        return Settings(api_key=as_key(key), base_url=base_url, output_dir=str(output_dir), **values)


def closed_port_url() -> str:
    """``http://127.0.0.1:PORT`` of a port nothing listens on (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Re-check ``predicate`` until truthy; fail after ``timeout`` seconds (no bare sleeps)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        pause.wait(0.01)


def run_log_records(output_dir: str | Path) -> list[dict[str, Any]]:
    """Every JSON line of ``output_dir/runs.jsonl`` (empty when there is none)."""
    path = Path(output_dir) / "runs.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_log_task_ids(output_dir: str | Path) -> set[str]:
    """Task ids named anywhere in the run log."""
    return {str(record.get("task_id")) for record in run_log_records(output_dir)}


@contextmanager
def task_rules(**overrides: Any) -> Iterator[None]:
    """New tasks of every Session get these `TaskRules` fields (short graces, say) while inside.

    Session builds its rules from the settings; the graces for odd answers are not settings,
    so a test shortens them here instead of waiting the real 30 or 60 seconds.
    """
    import nanobanana_magic.session.session as session_module

    original = session_module.TaskRules
    session_module.TaskRules = functools.partial(original, **overrides)  # type: ignore[misc]
    try:
        yield
    finally:
        session_module.TaskRules = original  # type: ignore[misc]
