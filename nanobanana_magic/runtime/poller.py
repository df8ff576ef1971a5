"""`Poller`: one per kernel. Poll threads ask the API about every pending task; workers finish results.

Two pools, because their work differs: a status request waits on the network (a few ms, and
on the kernel's request budget), finishing a result (download, checks, hash, save, the cell's
preview) costs CPU (about 12 ms for a 1K PNG). Were they one pool, a burst of results would
hold back the polls that find the next ones, and every task would be seen late.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .generation import Generation

log = logging.getLogger("nanobanana_magic")

#: Threads making status requests. Enough to keep several hundred requests a second in
#: flight at a few ms each; they sleep on the schedule or the budget, costing nothing.
POLL_THREADS = 8


class Poller:
    """Polls each tracked `Generation` on its schedule; `workers` threads download and save results.

    All threads are daemons: a kernel shutting down never waits for them.
    """

    def __init__(self, workers: int = 2, poll_threads: int = POLL_THREADS) -> None:
        self.workers = workers
        self.poll_threads = poll_threads
        self._due: list[tuple[float, int, Generation]] = []  # heap by due time; guarded by _wake
        # Of the idle poll threads, one (the leader) sleeps until the earliest due time; the others
        # sleep until the leader leaves with a task. Were they all to sleep until that time, every
        # poll would wake all of them (hundreds of times a second in a batch) for one to take it.
        lock = threading.RLock()
        self._wake = threading.Condition(lock)  # the leader's; `lock` guards every field here
        self._follow = threading.Condition(lock)
        self._has_leader = False
        self._finishing: queue.Queue[tuple[Generation, Callable[[], None]] | None] = queue.Queue()
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
        """How many tasks the poller still drives (ended ones are dropped at once)."""
        with self._wake:
            return len(self._tracked)

    def stop(self) -> None:
        """Stop all threads (pending tasks stay in the run log; nothing is cancelled at the API)."""
        with self._wake:
            self._stopping = True
            self._due.clear()
            self._wake.notify_all()
            self._follow.notify_all()
        for _ in range(self.workers):
            self._finishing.put(None)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # -- threads -------------------------------------------------------------

    def _schedule_at(self, generation: Generation, due: float) -> None:
        heapq.heappush(self._due, (due, next(self._order), generation))
        if self._due[0][2] is generation:  # a new earliest time: the leader's sleep is too long now
            (self._wake if self._has_leader else self._follow).notify()

    def _start_threads(self) -> None:
        if self._threads:
            return
        for n in range(self.poll_threads):
            self._threads.append(threading.Thread(target=self._run_polls, name=f"nanobanana-poll-{n}", daemon=True))
        for n in range(self.workers):
            self._threads.append(threading.Thread(target=self._run_worker, name=f"nanobanana-worker-{n}", daemon=True))
        for thread in self._threads:
            thread.start()

    def _next_due(self) -> tuple[float, Generation] | None:
        """Wait for the earliest due poll and take it; None once stopping."""
        with self._wake:
            while not self._stopping:
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    due, _, generation = heapq.heappop(self._due)
                    if not self._has_leader:
                        self._follow.notify()  # another idle thread leads while this one polls
                    return due, generation
                if self._has_leader:
                    self._follow.wait()
                    continue
                self._has_leader = True
                self._wake.wait(self._due[0][0] - now if self._due else None)
                self._has_leader = False
            return None

    def _run_polls(self) -> None:
        while (item := self._next_due()) is not None:
            due, generation = item
            try:
                finish = generation.step(defer=True)
            except Exception:  # never let one task kill a thread
                log.exception("polling task %s failed unexpectedly", generation.task_id)
                finish = None
            if finish is not None:
                self._finishing.put((generation, finish))
            else:
                self._after_turn(generation, due)

    def _run_worker(self) -> None:
        while (item := self._finishing.get()) is not None:
            generation, finish = item
            try:
                finish()
            except Exception:
                log.exception("finishing task %s failed unexpectedly", generation.task_id)
            self._after_turn(generation, time.monotonic())

    def _after_turn(self, generation: Generation, due: float) -> None:
        """Drop an ended task, or schedule its next poll."""
        if generation.done:
            with self._wake:
                self._tracked.discard(generation.task_id)
            return
        # The schedule's times are ages since submit, and the next one is chosen from the age the
        # poll was due at: the polls' own durations, or a wait for the budget, add no drift. Asked
        # outside the lock: a schedule may read the kernel's load, or make a plan first.
        now = time.monotonic()
        next_in = generation.next_poll_in(generation.elapsed - (now - due))
        with self._wake:
            if not self._stopping:
                self._schedule_at(generation, max(now, due + next_in))
