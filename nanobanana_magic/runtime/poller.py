"""`Poller`: one per kernel. A scheduler thread and a few worker threads drive every pending task."""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .generation import Generation

log = logging.getLogger("nanobanana_magic")


class Poller:
    """Polls each tracked `Generation` on its schedule; downloads and saves happen in the workers.

    All threads are daemons: a kernel shutting down never waits for them.
    """

    def __init__(self, workers: int = 4) -> None:
        self.workers = workers
        self._due: list[tuple[float, int, Generation]] = []  # guarded by _wake
        self._wake = threading.Condition()
        self._work: queue.Queue[tuple[float, Generation] | None] = queue.Queue()
        self._tracked: set[str] = set()  # task ids not yet ended; guarded by _wake
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def track(self, generation: Generation, first_poll_in: float | None = None) -> None:
        """Drive `generation` until it ends. The first status request comes after one schedule step."""
        generation.driven = True
        delay = generation.next_poll_in() if first_poll_in is None else first_poll_in
        with self._wake:
            if self._stopping:
                raise RuntimeError("the poller has been stopped")
            self._tracked.add(generation.task_id)
            self._schedule_at(generation, time.monotonic() + delay)
            self._start_threads()

    @property
    def tracked(self) -> int:
        """How many tasks the poller still drives (ended ones are dropped at their next turn)."""
        with self._wake:
            return len(self._tracked)

    def stop(self) -> None:
        """Stop all threads (pending tasks stay in the run log; nothing is cancelled at the API)."""
        with self._wake:
            self._stopping = True
            self._due.clear()
            self._wake.notify_all()
        for _ in self._threads:
            self._work.put(None)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # -- threads -------------------------------------------------------------

    def _schedule_at(self, generation: Generation, due: float) -> None:
        heapq.heappush(self._due, (due, next(self._order), generation))
        self._wake.notify()

    def _start_threads(self) -> None:
        if self._threads:
            return
        scheduler = threading.Thread(target=self._run_scheduler, name="nanobanana-scheduler", daemon=True)
        self._threads.append(scheduler)
        for n in range(self.workers):
            self._threads.append(threading.Thread(target=self._run_worker, name=f"nanobanana-worker-{n}", daemon=True))
        for thread in self._threads:
            thread.start()

    def _run_scheduler(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._due or self._due[0][0] > time.monotonic()):
                    self._wake.wait(None if not self._due else self._due[0][0] - time.monotonic())
                if self._stopping:
                    return
                due, _, generation = heapq.heappop(self._due)
            self._work.put((due, generation))

    def _run_worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            due, generation = item
            try:
                generation.step()
            except Exception:  # never let one task kill a worker
                log.exception("polling task %s failed unexpectedly", generation.task_id)
            with self._wake:
                if generation.done:
                    self._tracked.discard(generation.task_id)
                elif not self._stopping:
                    # Counted from the previous due time, not from when this poll returned:
                    # the polls' own durations must not add up into drift.
                    # From the age the poll was due at: the schedule's times are ages since submit.
                    now = time.monotonic()
                    age_at_due = generation.elapsed - (now - due)
                    self._schedule_at(generation, max(now, due + generation.next_poll_in(age_at_due)))
