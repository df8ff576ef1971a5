"""Poll schedules: the fixed setting, its validation, and the schedule learned from finished tasks."""

from __future__ import annotations

import math
import random

import pytest

from nanobanana_magic.core.schedule import (
    DEFAULT_STEPS,
    LAG_COSTS,
    MAX_GAP_FLOOR,
    MAX_GAP_SHARE,
    MIN_GAP,
    FixedSchedule,
    LearnedSchedule,
    LoadAwareSchedule,
    lag_cost_for,
    validate_schedule,
)


def lognormal(rng: random.Random, n: int, median: float = 20.0, sigma: float = 0.25) -> list[float]:
    return [median * math.exp(rng.gauss(0.0, sigma)) for _ in range(n)]


def poll_until_done(schedule, duration: float) -> tuple[int, float]:
    """(status requests, lag) of one task polled by `schedule`: a poll at age >= duration sees the end."""
    age, polls = 0.0, 0
    while True:
        age = schedule.next_poll(age, polls)
        polls += 1
        if age >= duration:
            return polls, age - duration


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def simulate(schedule, durations: list[float]) -> dict[str, float]:
    results = [poll_until_done(schedule, d) for d in durations]
    polls = [p for p, _ in results]
    lags = [lag for _, lag in results]
    return {
        "polls_mean": sum(polls) / len(polls),
        "polls_p95": quantile(polls, 0.95),
        "lag_p50": quantile(lags, 0.5),
        "lag_p95": quantile(lags, 0.95),
    }


# -- validation ----------------------------------------------------------------


def test_a_valid_schedule_comes_back_as_float_pairs_and_the_last_until_may_be_infinite():
    assert validate_schedule([[60, 1], [180, 2.5], [math.inf, 5]]) == ((60.0, 1.0), (180.0, 2.5), (math.inf, 5.0))
    assert validate_schedule(((1e9, 0.1),)) == ((1e9, 0.1),)


@pytest.mark.parametrize(
    "value, words",
    [
        ("auto", "list of [until_s, every_s] pairs"),
        (5, "list of [until_s, every_s] pairs"),
        ([], "at least one"),
        ([60, 1], "pairs"),
        ([[60, 1, 2]], "pairs"),
        ([[60, "1"]], "two numbers"),
        ([[True, 1]], "two numbers"),
        ([[math.nan, 1]], "two numbers"),
        ([[60, math.inf]], "two numbers"),
        ([[60, 0.05]], "at least 0.1"),
        ([[60, -1]], "at least 0.1"),
        ([[60, 1], [60, 2]], "increasing"),
        ([[60, 1], [30, 2]], "increasing"),
        ([[0, 1]], "positive"),
    ],
)
def test_a_bad_schedule_is_refused_with_one_line_naming_the_problem(value, words):
    with pytest.raises(ValueError) as caught:
        validate_schedule(value)
    message = str(caught.value)
    assert words in message and "\n" not in message


def test_a_fixed_schedule_refuses_what_validation_refuses():
    with pytest.raises(ValueError):
        FixedSchedule([[10, 0.01]])


# -- fixed -----------------------------------------------------------------------


def test_a_fixed_schedule_polls_at_each_steps_cadence_and_keeps_the_last_one_past_the_end():
    schedule = FixedSchedule([[10, 1], [30, 5]])
    assert schedule.next_poll(0, 0) == 1
    assert schedule.next_poll(9.5, 9) == 10.5
    assert schedule.next_poll(10, 10) == 15
    assert schedule.next_poll(100, 30) == 105
    assert schedule.likely_done(100) == 0.0


def test_the_default_fixed_schedule_is_the_package_default():
    assert FixedSchedule().steps == DEFAULT_STEPS


# -- learned ---------------------------------------------------------------------


def test_without_enough_history_the_fallback_decides():
    fallback = FixedSchedule([[1e9, 2]])
    schedule = LearnedSchedule.from_durations([20, 21, 22, 23], fallback)
    assert not schedule.learned
    assert [schedule.next_poll(age, 0) for age in (0, 7, 50)] == [2, 9, 52]
    assert schedule.likely_done(30) == 0.0


def test_unusable_durations_do_not_count_as_history():
    schedule = LearnedSchedule.from_durations([20, 0, -3, math.nan, math.inf, "20", 21, 22, 23], min_samples=5)
    assert not schedule.learned


def test_fixed_three_second_tasks_need_one_poll_just_after_three_seconds():
    schedule = LearnedSchedule.from_durations([3.0] * 200)
    first = schedule.next_poll(0.0, 0)
    assert 3.0 <= first <= 3.3
    assert simulate(schedule, [3.0] * 100)["polls_mean"] <= 2


def test_lognormal_tasks_are_seen_soon_after_they_end_with_few_polls():
    rng = random.Random(20260227)
    schedule = LearnedSchedule.from_durations(lognormal(rng, 200))
    figures = simulate(schedule, lognormal(rng, 1000))
    print("lognormal(20 s, 0.25): " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    assert figures["polls_mean"] <= 8
    assert figures["lag_p50"] <= 1.0
    assert figures["lag_p95"] <= 3.0


def test_the_learned_schedule_costs_far_fewer_polls_than_the_fixed_one_for_the_same_tasks():
    rng = random.Random(7)
    learned = simulate(LearnedSchedule.from_durations(lognormal(rng, 200)), lognormal(rng, 300))
    fixed = simulate(FixedSchedule(), lognormal(random.Random(7), 300))
    assert learned["polls_mean"] * 2.5 < fixed["polls_mean"]


def test_learned_polls_are_never_closer_than_a_quarter_second():
    rng = random.Random(1)
    for history in ([3.0] * 50, [0.2] * 50, [2.0, 3.0, 4.0] * 20, lognormal(rng, 200, median=5, sigma=0.05)):
        schedule = LearnedSchedule.from_durations(history)
        times = schedule.poll_times
        assert all(b - a >= MIN_GAP - 1e-9 for a, b in zip(times, times[1:])), times
        # Asked at any moment, even between planned polls (a late poll), the next one is not sooner.
        assert all(schedule.next_poll(age, 0) >= age + MIN_GAP for age in [i * 0.07 for i in range(200)])


def test_polls_cluster_where_tasks_end_and_thin_out_before():
    schedule = LearnedSchedule.from_durations(lognormal(random.Random(3), 200))
    times = schedule.poll_times
    assert times[0] > 10  # no task of this history ended before about 11 s: polling earlier is waste
    gaps = {t: b - t for t, b in zip(times, times[1:])}
    near_median = min(gaps.items(), key=lambda item: abs(item[0] - 20))[1]
    assert near_median < times[0] / 4


def test_past_the_tail_the_fallbacks_cadence_takes_over():
    fallback = FixedSchedule([[60, 1], [1e9, 5]])
    schedule = LearnedSchedule.from_durations(lognormal(random.Random(5), 200), fallback)
    end = schedule.poll_times[-1]
    assert schedule.likely_done(end) >= 0.98
    for age in (end, end + 0.3, 59.5, 61, 500):
        assert schedule.next_poll(age, 20) == pytest.approx(age + fallback.every(age))


def test_a_bimodal_history_gets_polls_around_both_modes_and_few_between():
    rng = random.Random(11)
    history = [rng.choice([10.0, 30.0]) * math.exp(rng.gauss(0, 0.05)) for _ in range(200)]
    times = LearnedSchedule.from_durations(history).poll_times
    assert sum(1 for t in times if 9 <= t <= 12) >= 2
    assert sum(1 for t in times if 27 <= t <= 34) >= 3
    assert sum(1 for t in times if 14 <= t <= 25) <= 4  # no end there in the history: only the gap rule's polls


def test_no_learned_gap_is_longer_than_a_quarter_of_the_age_so_a_changed_service_is_seen_soon():
    rng = random.Random(12)
    history = [rng.choice([2.0, 10.0, 30.0]) + rng.uniform(0.1, 1.0) for _ in range(60)]
    for lag_cost in LAG_COSTS:
        times = LearnedSchedule.from_durations(history, lag_cost=lag_cost).poll_times
        gaps = [(a, b - a) for a, b in zip(times, times[1:])]
        assert all(gap <= max(MAX_GAP_FLOOR, MAX_GAP_SHARE * age) + 0.1 for age, gap in gaps), times


def test_a_history_of_short_and_long_tasks_still_sees_the_short_ones_soon():
    # One bandwidth for the whole history smeared the 2 s mode over 2-5 s: the first poll came at 2.8 s
    # and later ones every 2.5 s. Each duration's own bandwidth keeps the modes sharp.
    rng = random.Random(13)
    history = [base + rng.uniform(0.1, 1.0) for base in (2.0, 10.0, 30.0) for _ in range(20)]
    short = [2.0 + rng.uniform(0.1, 1.0) for _ in range(300)]
    idle = simulate(LearnedSchedule.from_durations(history, lag_cost=LAG_COSTS[-1]), short)
    busy = simulate(LearnedSchedule.from_durations(history, lag_cost=LAG_COSTS[0]), short)
    assert idle["lag_p50"] <= 0.3 and busy["lag_p50"] <= 0.8
    assert busy["polls_mean"] < idle["polls_mean"] <= 4


def test_the_lag_cost_follows_the_budgets_share_of_each_pending_task():
    assert lag_cost_for(400 / 1000) == LAG_COSTS[0]  # a batch: as few polls as the lag allows
    assert lag_cost_for(20 / 60) == LAG_COSTS[0]
    assert lag_cost_for(20 / 8) == LAG_COSTS[1]
    assert lag_cost_for(20 / 1) == LAG_COSTS[-1]  # one cell: requests are cheap, lag is not
    assert lag_cost_for(float("nan")) == LAG_COSTS[0]


def test_a_load_aware_schedule_polls_each_time_by_the_plan_the_load_allows_then():
    history = lognormal(random.Random(14), 200)
    cost = [LAG_COSTS[-1]]
    schedule = LoadAwareSchedule(LearnedSchedule.from_durations(history), lambda: cost[0])
    idle, busy = schedule.plans[LAG_COSTS[-1]], schedule.plans[LAG_COSTS[0]]
    assert len(busy.poll_times) < len(idle.poll_times) and schedule.learned
    assert schedule.next_poll(21.5) == idle.next_poll(21.5) < busy.next_poll(21.5)
    cost[0] = LAG_COSTS[0]  # a thousand tasks arrived meanwhile
    assert schedule.next_poll(21.5) == busy.next_poll(21.5)
    assert schedule.likely_done(20.0) == busy.likely_done(20.0)


def test_without_history_a_load_aware_schedule_is_the_fallback():
    schedule = LoadAwareSchedule(LearnedSchedule.from_durations([3.0]), lambda: LAG_COSTS[0])
    assert not schedule.learned and schedule.next_poll(2.0) == 3.0


def test_likely_done_rises_from_zero_to_one_across_the_history():
    schedule = LearnedSchedule.from_durations(lognormal(random.Random(2), 200))
    assert schedule.likely_done(5) < 0.01
    assert 0.35 < schedule.likely_done(20) < 0.65
    assert schedule.likely_done(60) > 0.99
    ages = [i * 0.5 for i in range(200)]
    values = [schedule.likely_done(a) for a in ages]
    assert values == sorted(values)


@pytest.mark.parametrize(
    "durations",
    [[3.0] * 100, [2.0] * 50 + [10.0] * 50 + [30.0] * 50, lognormal(random.Random(3), 200)],
    ids=["identical", "three kinds", "lognormal"],
)
def test_likely_done_reads_the_historys_smoothed_cdf_within_a_hundredth(durations):
    from nanobanana_magic.core.schedule import _LogKernelDensity

    density = _LogKernelDensity(durations)
    ages = [i / 50 for i in range(1, 5000)]
    assert max(abs(density.likely_done(a) - density.cdf(a)) for a in ages) < 0.01


def test_a_schedule_is_decided_by_age_so_a_delayed_poll_does_not_shift_the_plan():
    schedule = LearnedSchedule.from_durations(lognormal(random.Random(4), 200))
    planned = schedule.poll_times
    # The budget held the third poll back by half a gap: the fourth is still the planned fourth.
    late = planned[2] + (planned[3] - planned[2]) / 2
    assert schedule.next_poll(late, 3) == planned[3]
