"""The kernel-wide request budget: a sliding window, priorities, 429 back-off. No real sleeping anywhere.

Single-threaded tests run on a simulated clock that the budget's `wait` advances.
Threaded tests (priorities, close) use a `wait` that only returns when notified: the
test moves the fake clock and notifies, so the outcome never depends on timing.
"""

from __future__ import annotations

import math
import random
import threading

import pytest
from conftest import most_in_any_window

from nanobanana_magic.http.budget import (
    ARRIVAL_SLACK,
    DEFAULT_RATE,
    MAX_RETRY_AFTER,
    MIN_RATE,
    POLL,
    POLL_LIKELY_DONE,
    SUBMIT,
    SUBMIT_GRACE,
    RequestBudget,
    poll_priority,
)


class SimulatedTime:
    """A clock whose `wait` jumps ahead by the timeout asked for: one caller, no real time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        assert timeout is not None and timeout > 0, "a lone caller must never wait for a notification"
        self.now += timeout


def simulated(rate: float) -> tuple[RequestBudget, SimulatedTime]:
    time = SimulatedTime()
    return RequestBudget(rate, clock=time, wait=time.wait, slack=0.0, submit_grace=0.0), time


def take(budget: RequestBudget, time: SimulatedTime, count: int, priority: int = POLL) -> list[float]:
    starts = []
    for _ in range(count):
        assert budget.acquire(priority)
        starts.append(time.now)
    return starts


# -- the window ------------------------------------------------------------------


def test_no_one_second_window_holds_more_than_the_budget():
    budget, time = simulated(7.5)
    rng = random.Random(42)
    starts = []
    for _ in range(3000):
        # Demand well above the rate, in bursts and lulls, some callers giving up.
        time.now += rng.choice([0.0, 0.0, 0.0, 0.01, 0.05, 0.3, 1.7]) * rng.random()
        deadline = time.now + rng.random() * 0.5 if rng.random() < 0.2 else None
        if budget.acquire(rng.choice([SUBMIT, POLL_LIKELY_DONE, POLL]), deadline):
            starts.append(time.now)
    assert most_in_any_window(starts) == 7
    assert all(b >= a + 1.0 for a, b in zip(starts, starts[7:]))
    assert budget.started == len(starts)


def test_the_default_window_keeps_jittered_arrivals_within_the_budget_at_the_service():
    time = SimulatedTime()
    budget = RequestBudget(50, clock=time, wait=time.wait)
    rng = random.Random(7)
    starts = take(budget, time, 2000)
    arrivals = [start + rng.uniform(0.0, ARRIVAL_SLACK) for start in starts]  # up to 50 ms on the way
    assert most_in_any_window(arrivals) == 50
    # Kept to the exact second, the same jitter puts one request too many in some window.
    exact, time = simulated(50)
    rng = random.Random(7)
    arrivals = [start + rng.uniform(0.0, ARRIVAL_SLACK) for start in take(exact, time, 2000)]
    assert most_in_any_window(arrivals) > 50


def test_the_window_slides_so_no_burst_straddles_a_second_boundary():
    # A token bucket refilled each second would let 10 go at 0.99 s and 10 more at 1.01 s.
    budget, time = simulated(10)
    time.now = 0.99
    first = take(budget, time, 10)
    time.now = 1.01
    second = take(budget, time, 10)
    assert first == [0.99] * 10
    assert second == pytest.approx([1.99] * 10)
    assert most_in_any_window(first + second) == 10


def test_saturated_demand_gets_the_whole_budget():
    budget, time = simulated(20)
    starts = take(budget, time, 2000)
    assert starts[-1] == pytest.approx(99.0)  # 20 a second for 100 s, no slack lost
    assert budget.waited_seconds == pytest.approx(99.0)


def test_below_one_request_a_second_the_starts_are_spaced_out():
    budget, time = simulated(0.25)
    assert take(budget, time, 3) == [0.0, 4.0, 8.0]


def test_a_caller_gives_up_at_its_deadline_and_does_not_hold_up_the_next():
    budget, time = simulated(1)
    assert budget.acquire(SUBMIT)
    assert not budget.acquire(POLL, deadline=0.4)
    assert time.now == pytest.approx(0.4)
    assert budget.acquire(POLL) and time.now == pytest.approx(1.0)
    assert budget.waiting == 0
    assert budget.started == 2


def test_lowering_the_rate_applies_at_once_and_bad_rates_are_refused():
    budget, time = simulated(10)
    budget.rate = 2
    assert budget.rate == 2 and budget.effective_rate == 2
    starts = take(budget, time, 6)
    assert most_in_any_window(starts) == 2
    for bad in (0, -1, math.inf, math.nan, "10", True):
        with pytest.raises(ValueError, match="max_requests_per_second"):
            budget.rate = bad
    with pytest.raises(ValueError):
        RequestBudget(0)


def test_the_default_ceiling_is_twenty_a_second():
    assert DEFAULT_RATE == 20.0
    assert RequestBudget().rate == 20.0


# -- 429s ------------------------------------------------------------------------


def test_a_429_halves_the_rate_and_honours_retry_after():
    budget, time = simulated(10)
    take(budget, time, 10)
    time.now = 5.0
    budget.penalize(retry_after=3)
    assert budget.effective_rate == 5
    assert budget.penalties == 1
    starts = take(budget, time, 20)
    assert starts[0] == pytest.approx(8.0)  # nothing before the Retry-After
    assert most_in_any_window(starts) == 5


def test_a_burst_of_429s_from_requests_in_flight_halves_once():
    budget, time = simulated(16)
    for _ in range(8):
        budget.penalize(retry_after=None)
    assert budget.effective_rate == 8
    assert budget.penalties == 8
    time.now += 1.0
    budget.penalize(None)
    assert budget.effective_rate == 4


def test_repeated_429s_never_slow_below_the_floor_and_retry_after_is_capped():
    budget, time = simulated(10)
    for _ in range(20):
        time.now += 1.0
        budget.penalize(None)
    assert budget.effective_rate == MIN_RATE
    budget.penalize(retry_after=3600)
    penalized_at = time.now
    starts = take(budget, time, 3)
    assert starts[0] == pytest.approx(penalized_at + MAX_RETRY_AFTER)
    assert starts[1] - starts[0] == pytest.approx(1 / MIN_RATE)


@pytest.mark.parametrize("retry_after", [None, 0, -5, math.nan, "soon"])
def test_a_429_without_a_usable_retry_after_still_halves_without_pausing(retry_after):
    budget, time = simulated(10)
    budget.penalize(retry_after)
    assert budget.effective_rate == 5
    assert budget.acquire(SUBMIT) and time.now == 0.0


def test_successes_win_the_rate_back_slowly_and_never_past_the_ceiling():
    budget, time = simulated(20)
    budget.penalize(None)
    assert budget.effective_rate == 10
    rates = []
    for _ in range(150):  # a success every 0.1 s
        time.now += 0.1
        budget.reward()
        rates.append(budget.effective_rate)
    assert rates[9] == pytest.approx(11.0)  # +5 % of the ceiling per second of successes
    assert rates[-1] == 20 and max(rates) == 20
    assert rates == sorted(rates)


def test_no_recovery_while_a_retry_after_is_in_force():
    budget, time = simulated(20)
    budget.penalize(retry_after=10)
    for _ in range(9):
        time.now += 1.0
        budget.reward()
    assert budget.effective_rate == 10


def test_raising_the_rate_while_backing_off_keeps_backing_off():
    budget, time = simulated(10)
    budget.penalize(None)
    budget.rate = 40
    assert budget.effective_rate == 5
    budget.rate = 2
    assert budget.effective_rate == 2


# -- priorities and threads ------------------------------------------------------


class SteppedTime:
    """A fake clock for threads: waiters wake only when the test moves time on and notifies."""

    def __init__(self) -> None:
        self.now = 0.0
        self.condition = threading.Condition()

    def __call__(self) -> float:
        return self.now

    @staticmethod
    def wait(condition: threading.Condition, timeout: float | None) -> None:
        condition.wait()

    def advance(self, seconds: float) -> None:
        with self.condition:
            self.now += seconds
            self.condition.notify_all()

    def until(self, predicate, what: str) -> None:
        with self.condition:
            assert self.condition.wait_for(predicate, timeout=10), f"timed out waiting for {what}"


def stepped(rate: float) -> tuple[RequestBudget, SteppedTime]:
    time = SteppedTime()
    return RequestBudget(rate, clock=time, wait=time.wait, condition=time.condition, slack=0.0, submit_grace=0.0), time


def start_waiters(budget: RequestBudget, time: SteppedTime, names_and_priorities, served: list) -> list:
    threads = []
    for name, priority in names_and_priorities:

        def run(name=name, priority=priority):
            ok = budget.acquire(priority)
            with time.condition:
                served.append((name, ok))
                time.condition.notify_all()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        count = len(threads)
        time.until(lambda: budget.waiting == count, f"{name} to queue")  # arrival order is the test's
    return threads


def test_submits_go_before_waiting_polls():
    budget, time = stepped(1)
    assert budget.acquire(SUBMIT)  # the window is full until t = 1
    served: list = []
    threads = start_waiters(
        budget,
        time,
        [
            ("poll-a", POLL),
            ("poll-b", POLL),
            ("likely-done", POLL_LIKELY_DONE),
            ("submit-a", SUBMIT),
            ("submit-b", SUBMIT),
        ],
        served,
    )
    for step in range(1, 6):
        time.advance(1.0)
        time.until(lambda: len(served) == step, f"start {step}")
    assert [name for name, _ in served] == ["submit-a", "submit-b", "likely-done", "poll-a", "poll-b"]
    for thread in threads:
        thread.join(5)
    assert budget.started == 6


def test_close_wakes_every_waiter_and_they_start_nothing():
    budget, time = stepped(1)
    assert budget.acquire(SUBMIT)
    served: list = []
    threads = start_waiters(budget, time, [("poll", POLL), ("submit", SUBMIT)], served)
    budget.close()
    time.until(lambda: len(served) == 2, "both waiters to return")
    assert sorted(served) == [("poll", False), ("submit", False)]
    assert not budget.acquire(SUBMIT)
    for thread in threads:
        thread.join(5)
    assert budget.started == 1 and budget.waiting == 0


def test_polls_of_likely_finished_tasks_get_the_higher_poll_priority():
    assert poll_priority(0.9) == POLL_LIKELY_DONE
    assert poll_priority(0.1) == POLL
    assert SUBMIT < POLL_LIKELY_DONE < POLL


def test_threads_at_a_saturated_budget_on_the_real_clock_are_all_served_within_the_window():
    starts: list[float] = []

    class Recorded(RequestBudget):
        def _wait_for_turn(self, ticket, deadline):  # under the budget's lock: the start as the budget saw it
            served = super()._wait_for_turn(ticket, deadline)
            if served:
                starts.append(self._starts[-1])
            return served

    budget = Recorded(40)  # each waiter on its own condition, woken only when it heads the queue

    def client(priority: int) -> None:
        for _ in range(8):
            assert budget.acquire(priority)

    threads = [threading.Thread(target=client, args=(p,)) for p in (SUBMIT, POLL_LIKELY_DONE, POLL) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(starts) == 96 and budget.waiting == 0
    assert most_in_any_window(starts, 1.0 + ARRIVAL_SLACK) <= 40


def test_polls_leave_a_submit_burst_the_slots_that_free_between_its_submits():
    time = SimulatedTime()
    budget = RequestBudget(10, clock=time, wait=time.wait, slack=0.0)
    assert budget.acquire(SUBMIT)
    started = time.now
    assert budget.acquire(POLL)  # a poll right after a submit waits out the grace, though the window has room
    assert time.now == pytest.approx(started + SUBMIT_GRACE)
    time.now += 1.0
    assert budget.acquire(POLL) and time.now == pytest.approx(started + 1.0 + SUBMIT_GRACE)  # no submit lately: at once
