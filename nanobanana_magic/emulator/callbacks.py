"""Callback delivery: POST the finished task to its ``callBackUrl``, as the service does."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

CALLBACK_TIMEOUT = 15.0

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CallbackSender:
    """Sends callbacks from daemon threads and remembers every attempt.

    ``_lock`` guards ``_attempts``, ``_timers`` and the once-per-task bookkeeping.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: list[dict[str, Any]] = []
        self._timers: set[threading.Timer] = set()
        self._sent: set[str] = set()

    @property
    def attempts(self) -> list[dict[str, Any]]:
        """Copies of the attempts so far: url, task_id, status, error, payload, time."""
        with self._lock:
            return [dict(attempt) for attempt in self._attempts]

    def schedule(self, delay: float, task_id: str, url: str, payload: Callable[[], dict]) -> None:
        """Send after ``delay`` seconds; ``payload`` is built when the time comes."""
        timer = threading.Timer(max(0.0, delay), self._fire_timer, args=(task_id, url, payload))
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def send(self, task_id: str, url: str, payload: dict) -> None:
        """Send now from a daemon thread, unless this task's callback already went out."""
        with self._lock:
            if task_id in self._sent:
                return
            self._sent.add(task_id)
        threading.Thread(
            target=self._post, args=(task_id, url, payload), daemon=True, name=f"nanobanana-callback-{task_id[:8]}"
        ).start()

    def cancel_pending(self) -> None:
        """Drop callbacks not sent yet (emulator stopped or reset)."""
        with self._lock:
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()

    def clear(self) -> None:
        """Cancel pending callbacks and forget the recorded attempts."""
        self.cancel_pending()
        with self._lock:
            self._attempts.clear()
            self._sent.clear()

    def _fire_timer(self, task_id: str, url: str, payload: Callable[[], dict]) -> None:
        with self._lock:
            self._timers.discard(threading.current_thread())  # a Timer runs in itself
        self.send(task_id, url, payload())

    def _post(self, task_id: str, url: str, payload: dict) -> None:
        attempt: dict[str, Any] = {
            "url": url,
            "task_id": task_id,
            "status": None,
            "error": None,
            "payload": payload,
            "time": time.time(),
        }
        # No Authorization header: the key must never travel to a third-party host.
        request = urllib.request.Request(
            url,
            data=json.dumps(payload).encode("utf-8"),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "nanobanana-emulator"},
        )
        try:
            with _NO_PROXY_OPENER.open(request, timeout=CALLBACK_TIMEOUT) as response:
                attempt["status"] = response.status
        except urllib.error.HTTPError as error:
            attempt["status"] = error.code
        except Exception as error:
            attempt["error"] = f"{type(error).__name__}: {error}"
        with self._lock:
            self._attempts.append(attempt)
