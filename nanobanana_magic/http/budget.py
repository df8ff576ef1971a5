"""`RequestBudget`: the kernel-wide ceiling on API requests (`max_requests_per_second`).

Every request (submit, status poll, credits) calls `acquire` first. In ANY one-second
window at most `floor(rate)` requests start: the budget keeps the start times of the
last second (a sliding window), so unlike a token bucket it never lets a full second's
worth go at the end of one window and another at the start of the next. Below one
request per second the rule becomes "one start per 1/rate seconds".

The window is a little longer than a second (`ARRIVAL_SLACK`): the service counts
arrivals, which trail the starts by a few ms and not evenly, so a budget kept to the
exact second at the service's own limit now and then lands one request over it there
(measured: 401 in a second against 400, and a 429 that halved the rate). With 50 ms of
slack any 1-second window at the service holds at most `floor(rate)` arrivals as long as
the network's jitter stays under 50 ms, for 5 % of the throughput.

Waiters are served by priority, then first come first served: a submit (`SUBMIT`)
goes before a poll of a task that has probably ended (`POLL_LIKELY_DONE`), which
goes before any other poll (`POLL`). A submit that waits delays its whole task; a
poll that waits only delays noticing the end, so polls never hold submits back. Nor
between submits: a cell submitting in a loop is not waiting while it prepares the next
one, and polls would take every slot that frees meanwhile (a 50-task sweep then took
4.4 s to submit at 20/s instead of 2.6 s). So for `SUBMIT_GRACE` after a submit starts,
no poll starts: the next submit of a burst finds its slot free.

On a 429 (`penalize`) the client slows itself below the ceiling: the effective rate
halves (at most once a second, so a burst of 429s from requests already in flight
counts once; never below 0.5/s) and nothing starts before the Retry-After has passed
(capped at 60 s). Each success (`reward`) wins back 5 % of the ceiling per second of
successes: from the floor to a 20/s ceiling in about 20 s, AIMD as in TCP.

Default ceiling: 20 requests per second. The figures behind it (simulated: tasks of
lognormal duration, median 20 s, sigma 0.25, as 1K tasks; polled on the schedule learned
from 200 earlier ones, `core/schedule.py`, about 5 polls plus the submit per task):

- Interactive use is a few cells or a sweep of tens. A 50-task sweep submitted at once
  makes ~300 requests in ~35 s. At 20/s its ends are seen 0.9 s (median) / 2.6 s (p95)
  after they happen, close to the unlimited figures; at 10/s 1.2 / 4.6 s; at 5/s
  2.6 / 7.0 s. Below 20/s the limiter, not the service, sets the pace of a sweep.
- 1,000 tasks submitted at once need ~6,000 requests within ~40 s: at 400/s (the
  benchmark's budget) ends are seen 0.8 / 2.6 s after they happen, at 200/s 1.3 / 4.3 s.
  At 20/s the submits alone take 50 s and the last result is seen at ~100 s instead of
  ~43 s: slower, but polite, and nothing fails.
- The real account's limit is unknown. 20/s (1,200 a minute) from one kernel is modest
  for an HTTP API, and if it is too high anyway the 429 handling above slows down by
  itself. A user whose account allows more raises `max_requests_per_second`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable

SUBMIT = 0
POLL_LIKELY_DONE = 1
POLL = 2

DEFAULT_RATE = 20.0
MIN_RATE = 0.5  # the effective rate after any number of 429s
MAX_RETRY_AFTER = 60.0  # a Retry-After beyond this is not believed
RECOVERY = 0.05  # share of the ceiling won back per second of successes
DECREASE_SPACING = 1.0  # 429s closer together than this are one congestion event
ARRIVAL_SLACK = 0.05  # seconds added to the window; see the module docstring
SUBMIT_GRACE = 0.01  # seconds after a submit during which polls wait; see the module docstring
LIKELY_DONE = 0.5  # `poll_priority`: from this probability of having ended, a poll goes first

Wait = Callable[[threading.Condition, "float | None"], object]


def _wait_on(condition: threading.Condition, timeout: float | None) -> object:
    return condition.wait(timeout)


def _checked_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0 < rate < math.inf):
        raise ValueError(f"max_requests_per_second must be a positive number (e.g. {DEFAULT_RATE:g}), got {rate!r}")
    return float(rate)


def _window(rate: float, slack: float = 0.0) -> tuple[int, float]:
    """(starts allowed, seconds): `floor(rate)` per second, or one per 1/rate s below 1/s; plus `slack`."""
    return (math.floor(rate), 1.0 + slack) if rate >= 1 else (1, 1.0 / rate + slack)


def poll_priority(likely_done: float) -> int:
    """The priority of a status poll, from the probability that its task has ended."""
    return POLL_LIKELY_DONE if likely_done >= LIKELY_DONE else POLL


class RequestBudget:
    """A sliding-window rate limit with priorities and 429 back-off, shared by every thread of a kernel.

    `clock` gives seconds (monotonic); `deadline`s are on it. `wait(condition, timeout)`
    blocks on the budget's condition for at most `timeout` seconds (None: until
    notified); tests inject it together with a fake clock and their own `condition`.
    `slack`: seconds added to the window (`ARRIVAL_SLACK`); `submit_grace`: see `SUBMIT_GRACE`.
    """

    def __init__(
        self,
        rate: float = DEFAULT_RATE,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Wait = _wait_on,
        condition: threading.Condition | None = None,
        slack: float = ARRIVAL_SLACK,
        submit_grace: float = SUBMIT_GRACE,
    ) -> None:
        self._clock = clock
        self._slack = slack
        self._submit_grace = submit_grace
        self._last_submit = -math.inf
        self._wait = wait
        self._lock = threading.Lock()
        self._cond = condition or threading.Condition(self._lock)  # guards every field below
        # Each waiter sleeps on its own condition (on the same lock), and only the head of the
        # queue is woken when it may go: with a dozen threads waiting at a saturated budget, waking
        # them all at every start cost more CPU than the requests. An injected `condition` (tests
        # with a fake clock) is shared by every waiter instead.
        self._own_conditions = condition is None
        self._sleepers: dict[tuple[int, int], threading.Condition] = {}
        self._ceiling = _checked_rate(rate)
        self._rate = self._ceiling
        self._starts: deque[float] = deque()  # start times, oldest first, pruned to the longest window
        self._queue: list[tuple[int, int]] = []  # heap of (priority, arrival) tickets of the waiters
        self._arrivals = itertools.count()
        self._not_before = -math.inf  # a Retry-After in force until then
        self._last_decrease = -math.inf
        self._last_increase = -math.inf
        self._closed = False
        self.started = 0
        self.waited_seconds = 0.0
        self.penalties = 0

    # -- settings and state ----------------------------------------------------

    @property
    def rate(self) -> float:
        """The ceiling, requests per second (the kernel setting)."""
        return self._ceiling

    @rate.setter
    def rate(self, value: float) -> None:
        value = _checked_rate(value)
        with self._cond:
            recovered = self._rate >= self._ceiling
            self._ceiling = value
            # Not backing off: follow the setting. Backing off: stay as slow, but never above it.
            self._rate = value if recovered else min(self._rate, value)
            self._wake_all()

    @property
    def effective_rate(self) -> float:
        """The rate in force now: the ceiling, or less after 429s."""
        with self._cond:
            return self._rate

    @property
    def waiting(self) -> int:
        """How many callers are blocked in `acquire`."""
        with self._cond:
            return len(self._queue)

    # -- requests --------------------------------------------------------------

    def acquire(self, priority: int = POLL, deadline: float | None = None) -> bool:
        """Block until this caller may start a request; False if `deadline` passed or the budget closed first."""
        with self._cond:
            if self._closed:
                return False
            called = self._clock()
            ticket = (priority, next(self._arrivals))
            heapq.heappush(self._queue, ticket)
            self._sleepers[ticket] = threading.Condition(self._lock) if self._own_conditions else self._cond
            try:
                return self._wait_for_turn(ticket, deadline)
            finally:
                self._queue.remove(ticket)
                heapq.heapify(self._queue)
                del self._sleepers[ticket]
                self.waited_seconds += max(self._clock() - called, 0.0)
                self._wake_head()  # the next in line recomputes its wait

    def _wait_for_turn(self, ticket: tuple[int, int], deadline: float | None) -> bool:
        while not self._closed:
            now = self._clock()
            timeout: float | None = None  # not first in line: until the queue changes
            if self._queue[0] == ticket:
                ready = self._ready_at(now)
                if ticket[0] > SUBMIT:
                    ready = max(ready, self._last_submit + self._submit_grace)
                if now >= ready:
                    self._starts.append(now)
                    self.started += 1
                    if ticket[0] == SUBMIT:
                        self._last_submit = now
                    return True
                timeout = ready - now
            if deadline is not None:
                if now >= deadline:
                    return False
                timeout = deadline - now if timeout is None else min(timeout, deadline - now)
            self._wait(self._sleepers[ticket], timeout)
        return False

    def _ready_at(self, now: float) -> float:
        """The earliest time the next request may start, given the starts so far."""
        count, seconds = _window(self._rate, self._slack)
        longest = _window(min(MIN_RATE, self._ceiling), self._slack)[1]
        while self._starts and self._starts[0] <= now - longest:
            self._starts.popleft()
        ready = self._not_before
        if len(self._starts) >= count:
            ready = max(ready, self._starts[-count] + seconds)
        return ready

    def _wake_head(self) -> None:
        if self._queue:
            self._sleepers[self._queue[0]].notify_all()

    def _wake_all(self) -> None:
        for sleeper in self._sleepers.values():
            sleeper.notify_all()

    # -- feedback --------------------------------------------------------------

    def penalize(self, retry_after: float | None = None) -> None:
        """A 429: halve the effective rate and start nothing before `retry_after` seconds from now."""
        with self._cond:
            now = self._clock()
            self.penalties += 1
            if now - self._last_decrease >= DECREASE_SPACING:
                self._rate = max(self._rate / 2, min(MIN_RATE, self._ceiling))
                self._last_decrease = now
            self._last_increase = now  # recovery counts from here
            pause = retry_after if isinstance(retry_after, (int, float)) and retry_after > 0 else 0.0
            self._not_before = max(self._not_before, now + min(float(pause), MAX_RETRY_AFTER))
            self._wake_all()

    def reward(self) -> None:
        """A success: win back `RECOVERY` of the ceiling per second since the last change."""
        with self._cond:
            now = self._clock()
            if self._rate >= self._ceiling or now < self._not_before:
                self._last_increase = now
                return
            elapsed = min(max(now - self._last_increase, 0.0), 1.0)  # a lone success after a pause: one second
            self._rate = min(self._ceiling, self._rate + RECOVERY * self._ceiling * elapsed)
            self._last_increase = now
            self._wake_all()

    def close(self) -> None:
        """Wake every waiter (their `acquire` returns False); later calls return False at once."""
        with self._cond:
            self._closed = True
            self._wake_all()

    def __repr__(self) -> str:
        return (
            f"RequestBudget(rate={self._ceiling:g}/s, effective={self._rate:g}/s, started={self.started}, "
            f"waiting={len(self._queue)}, penalties={self.penalties})"
        )
