"""`Generation` as a state machine: one end, told once, from any thread (no sleeps: events hold the races open)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from nanobanana_magic.core.errors import TaskFailedError, TaskTimeoutError
from nanobanana_magic.core.schedule import FixedSchedule
from nanobanana_magic.core.states import TaskState
from nanobanana_magic.core.status import TaskStatus
from nanobanana_magic.runtime.generation import Generation, Outcome, TaskRules
from nanobanana_magic.runtime.poller import Poller
from nanobanana_magic.session.registry import Registry

WAIT = 10.0


class ScriptedApi:
    """record-info answers from a script; downloads that wait for `release` once they have begun."""

    def __init__(self, *answers: dict) -> None:
        self.answers = list(answers)
        self.downloading = threading.Event()
        self.release = threading.Event()

    def record_info(self, task_id: str, *, priority: int = 2) -> TaskStatus:
        return TaskStatus.from_data(task_id, self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])

    def download(self, url: str, *, task_id: str | None = None) -> bytes:
        self.downloading.set()
        assert self.release.wait(WAIT)
        return b"\x89PNG\r\n\x1a\n-not-really"


class RecordingSink:
    """A store stand-in: remembers outcomes; `hold` keeps the end of a task open while it records."""

    def __init__(self, hold: bool = False) -> None:
        self.outcomes: list[Outcome] = []
        self.recording = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def save_image(self, task_id, request, url, submitted_at, data) -> tuple[Path, str]:
        return Path(f"/tmp/{task_id}.png"), "0" * 64

    def record_outcome(self, outcome: Outcome) -> None:
        self.recording.set()
        assert self.release.wait(WAIT)
        self.outcomes.append(outcome)


SUCCESS = {"successFlag": 1, "response": {"resultImageUrl": "http://files/x.png"}}
FAILURE = {"successFlag": 3, "errorMessage": "flagged by content policy"}


def test_cancel_during_a_slow_download_stays_cancelled_and_listeners_hear_the_end_once():
    api, sink = ScriptedApi(SUCCESS), RecordingSink()
    generation = Generation("t-cancel", {"prompt": "p"}, api=api, sink=sink)
    heard: list[str] = []
    generation.add_listener(lambda g: heard.append(g.status))
    stepping = threading.Thread(target=generation.step)
    stepping.start()
    assert api.downloading.wait(WAIT)  # the task succeeded at the API; its image is on the way
    generation.cancel()
    api.release.set()
    stepping.join(WAIT)
    assert generation.status == "cancelled" and generation.path is None
    assert heard == ["cancelled"]
    assert sink.outcomes == []  # the run log never says "succeeded" for what the cell shows as cancelled


def test_ending_twice_keeps_the_first_end():
    generation = Generation("t-twice", {"prompt": "p"}, api=ScriptedApi(FAILURE), sink=RecordingSink())
    generation.step()
    generation.cancel()
    generation.complete("http://files/late.png", data=b"late")
    assert generation.status == "failed" and isinstance(generation.exception, TaskFailedError)


def test_wait_returns_only_after_the_end_is_complete_and_raises_a_failed_tasks_error():
    sink = RecordingSink(hold=True)
    generation = Generation("t-wait", {"prompt": "p"}, api=ScriptedApi(FAILURE), sink=sink)
    generation.driven = True  # a poller drives it; wait() only waits
    ending = threading.Thread(target=generation.step)
    ending.start()
    assert sink.recording.wait(WAIT)  # the end is claimed, the run log is being written
    assert generation.done and generation.exception is not None
    with pytest.raises(TaskTimeoutError):
        generation.wait(0.01)  # not ended for a waiter until the record is written
    outcome: list[BaseException] = []
    waiter = threading.Thread(target=lambda: _capture(generation, outcome))
    waiter.start()
    sink.release.set()
    waiter.join(WAIT)
    ending.join(WAIT)
    assert len(outcome) == 1 and isinstance(outcome[0], TaskFailedError)
    assert [o.status for o in sink.outcomes] == [TaskState.FAILED]


def _capture(generation: Generation, into: list[BaseException]) -> None:
    try:
        generation.wait(WAIT)
    except BaseException as exc:
        into.append(exc)


def test_the_poller_drops_tasks_once_they_end():
    poller = Poller(workers=1)
    api = ScriptedApi(SUCCESS)
    api.release.set()
    generation = Generation("t-poll", {"prompt": "p"}, api=api, rules=TaskRules(schedule=FixedSchedule(((1e9, 0.1),))))
    poller.track(generation, first_poll_in=0)
    assert generation.join(WAIT)
    poller.track(Generation("t-other", {"prompt": "p"}, api=ScriptedApi({"successFlag": 0})), first_poll_in=0)
    deadline = threading.Event()
    for _ in range(200):  # the worker prunes the ended task at its turn, right after the end
        if poller.tracked == 1:
            break
        deadline.wait(0.01)
    assert poller.tracked == 1
    poller.stop()


def test_polls_go_on_while_every_worker_is_busy_finishing_a_result():
    poller = Poller(workers=1, poll_threads=2)
    slow = ScriptedApi(SUCCESS)  # its download holds the only worker until released
    finished = Generation("t-slow", {"prompt": "p"}, api=slow, rules=TaskRules(schedule=FixedSchedule(((1e9, 0.1),))))
    poller.track(finished, first_poll_in=0)
    assert slow.downloading.wait(WAIT)
    polled = threading.Event()

    class Counting(ScriptedApi):
        def record_info(self, task_id: str, *, priority: int = 2) -> TaskStatus:
            polled.set()
            return super().record_info(task_id, priority=priority)

    other = Counting({"successFlag": 0})
    poller.track(Generation("t-other", {"prompt": "p"}, api=other), first_poll_in=0)
    assert polled.wait(WAIT)  # the other task's poll did not wait behind the download
    assert not finished.done
    slow.release.set()
    assert finished.join(WAIT) and finished.status == "succeeded"
    poller.stop()


def test_the_registry_can_be_read_while_other_threads_add():
    registry = Registry()
    start = threading.Barrier(5)

    def add(worker: int) -> None:
        start.wait()
        for n in range(200):
            registry.add(Generation(f"w{worker}-{n}", {"prompt": "p"}))

    threads = [threading.Thread(target=add, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    start.wait()
    seen = 0
    while any(t.is_alive() for t in threads):
        seen = max(seen, len([g for g in registry.values() if not g.done]))  # never "changed size during iteration"
    for thread in threads:
        thread.join()
    assert len(registry) == 800 and "w3-199" in registry and registry.get("w0-0").task_id == "w0-0"
    assert len(registry.pending()) == 800
