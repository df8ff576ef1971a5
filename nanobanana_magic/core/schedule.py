"""When to ask the API whether a task has finished: fixed cadences and schedules learned from history.

Pure: no clocks, threads or I/O. Ages are seconds since the task was submitted.
Two schedules share one interface (`PollSchedule`):

- `FixedSchedule`: the `poll_schedule = [[until_s, every_s], ...]` setting, and the fallback.
- `LearnedSchedule`: built from the durations of finished tasks of the same resolution
  (`poll_schedule = "auto"`), so polls cluster where such tasks usually end and stay
  sparse where they rarely do.

How the learned plan is made: the durations' distribution is estimated by a kernel
density in log-duration (the empirical distribution, smoothed: a lognormal history
stays lognormal, a bimodal one keeps both modes). Poll times are then chosen by dynamic
programming to minimise, per task, the expected number of status requests plus
`lag_cost` times the expected lag (seconds between the task's end and the poll that
sees it): the classic optimal-inspection problem. The optimum is dense where tasks
are likely to end and sparse before (nothing to see yet) and in the tails. Past the
99th percentile the fallback's cadence takes over, so a task that runs unusually long
is never polled less often than the fixed schedule would poll it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

MIN_EVERY = 0.1  # the smallest interval a user may configure (INTERFACE.md)
MIN_GAP = 0.25  # a learned schedule never polls more often than this
MAX_GAP_SHARE = 0.25  # nor, after its first poll, waits longer than this share of the task's age...
MAX_GAP_FLOOR = 1.0  # ...or this many seconds, whichever is longer
DEFAULT_STEPS: tuple[tuple[float, float], ...] = ((60.0, 1.0), (180.0, 2.0), (math.inf, 5.0))
TAIL_QUANTILE = 0.99  # past it, the fallback's cadence
NEWEST_DURATIONS = 200  # per resolution: enough for the tails, recent enough to follow the service
_EXAMPLE = "e.g. [[60, 1], [180, 2], [1e9, 5]]"


class PollSchedule(Protocol):
    """What the poller asks a schedule."""

    def next_poll(self, age: float, polls_so_far: int) -> float:
        """Seconds from submit of the next status request after `age`."""

    def likely_done(self, age: float) -> float:
        """Probability that the task has ended by `age` (0.0 when the schedule cannot tell)."""


# -- fixed -------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_schedule(value: Any) -> tuple[tuple[float, float], ...]:
    """`value` as a tuple of (until_s, every_s) floats, or `ValueError` with a one-line message."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"poll_schedule must be a list of [until_s, every_s] pairs, {_EXAMPLE}; got {value!r}")
    if not value:
        raise ValueError(f"poll_schedule must hold at least one [until_s, every_s] pair, {_EXAMPLE}")
    steps: list[tuple[float, float]] = []
    for step in value:
        if isinstance(step, (str, bytes)) or not isinstance(step, (list, tuple)) or len(step) != 2:
            raise ValueError(f"poll_schedule steps must be [until_s, every_s] pairs, {_EXAMPLE}; got {step!r}")
        until, every = step
        if not (_is_number(until) and _is_number(every)) or math.isnan(until) or not math.isfinite(every):
            raise ValueError(f"poll_schedule steps must hold two numbers (until_s may be inf), got {step!r}")
        if every < MIN_EVERY:
            raise ValueError(f"poll_schedule: every_s must be at least {MIN_EVERY} s, got {every!r} in {step!r}")
        if until <= (steps[-1][0] if steps else 0.0):
            raise ValueError(f"poll_schedule: until_s must be positive and increasing, got {until!r} in {step!r}")
        steps.append((float(until), float(every)))
    return tuple(steps)


class FixedSchedule:
    """Poll every `every_s` while the task's age is under `until_s`; past the last step, its cadence."""

    def __init__(self, steps: Sequence[Sequence[float]] = DEFAULT_STEPS) -> None:
        self.steps = validate_schedule(steps)

    def every(self, age: float) -> float:
        """The interval between polls at `age`."""
        for until, every in self.steps:
            if age < until:
                return every
        return self.steps[-1][1]

    def next_poll(self, age: float, polls_so_far: int = 0) -> float:
        """`age` plus the interval at `age` (`polls_so_far` is not needed: the cadence depends on age only)."""
        return age + self.every(age)

    def likely_done(self, age: float) -> float:
        """A fixed schedule knows nothing about durations."""
        return 0.0

    def __repr__(self) -> str:
        return f"FixedSchedule({[list(step) for step in self.steps]!r})"


# -- learned -----------------------------------------------------------------


class _LogKernelDensity:
    """The durations' distribution: a Gaussian kernel density in log-duration, adaptive.

    Each duration gets its own bandwidth: the distance to its k-th nearest neighbour
    (k = √n), never wider than Silverman's rule for the whole history nor narrower than
    `MIN_BANDWIDTH`. Where durations crowd (a mode) the density stays sharp, where they are
    sparse (the tails, the gap between two kinds of task) it spreads. One global bandwidth
    smears a history of 2 s and 30 s tasks over both, and 2 s tasks were then seen a second late.
    """

    MIN_BANDWIDTH = 0.02  # about 2 % of the duration: identical durations still make a narrow bump
    TABLE_POINTS = 512  # `likely_done`: within 0.01 of `cdf` for the narrowest bump (tests/test_schedule.py)

    def __init__(self, durations: Sequence[float]) -> None:
        logs = sorted(math.log(d) for d in durations)
        n = len(logs)
        mean = sum(logs) / n
        sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / max(n - 1, 1))
        iqr = logs[(3 * n) // 4] - logs[n // 4]
        spread = min(sd, iqr / 1.349) if iqr > 0 else sd
        # Silverman's rule of thumb: robust to outliers, near-optimal for a unimodal history.
        widest = max(0.9 * spread * n**-0.2, self.MIN_BANDWIDTH)
        k = max(1, min(n - 1, round(math.sqrt(n))))
        self.bandwidths = [
            min(max(_kth_nearest(logs, i, k), self.MIN_BANDWIDTH), widest) if n > 1 else widest for i in range(n)
        ]
        self.logs = logs
        self._table: tuple[list[float], list[float]] | None = None

    def cdf(self, t: float) -> float:
        if t <= 0:
            return 0.0
        x, root2 = math.log(t), math.sqrt(2.0)
        return sum(math.erfc((mu - x) / (h * root2)) for mu, h in zip(self.logs, self.bandwidths)) / (
            2 * len(self.logs)
        )

    def likely_done(self, t: float) -> float:
        """`cdf(t)` read from a table of `TABLE_POINTS` log-spaced ages, made on first use: every
        status request asks it (for its priority at the budget), and `cdf` sums over the history."""
        table = self._table
        if table is None:
            spread = 4 * max(self.bandwidths)
            lo, hi = self.logs[0] - spread, self.logs[-1] + spread
            xs = [lo + (hi - lo) * i / (self.TABLE_POINTS - 1) for i in range(self.TABLE_POINTS)]
            table = self._table = (xs, [self.cdf(math.exp(x)) for x in xs])
        if t <= 0:
            return 0.0
        xs, ys = table
        x = math.log(t)
        k = bisect.bisect_right(xs, x)
        if k == 0:
            return 0.0
        if k == len(xs):
            return 1.0
        share = (x - xs[k - 1]) / (xs[k] - xs[k - 1])
        return ys[k - 1] + share * (ys[k] - ys[k - 1])

    def quantile(self, q: float) -> float:
        spread = 6 * max(self.bandwidths)
        lo, hi = math.exp(self.logs[0] - spread), math.exp(self.logs[-1] + spread)
        for _ in range(60):  # bisection in log space: about 1e-12 relative
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if self.cdf(mid) < q else (lo, mid)
        return hi


def _kth_nearest(values: Sequence[float], i: int, k: int) -> float:
    """Distance from sorted `values[i]` to its k-th nearest other value (a merge of both sides)."""
    left, right, x = i - 1, i + 1, values[i]
    distance = 0.0
    for _ in range(k):
        if right >= len(values) or (left >= 0 and x - values[left] <= values[right] - x):
            distance, left = x - values[left], left - 1
        else:
            distance, right = values[right] - x, right + 1
    return distance


def _plan(cdf: Any, end: float, lag_cost: float, min_gap: float) -> tuple[float, ...]:
    """Poll times in (0, end], the last one at `end`, minimising E[polls] + lag_cost * E[lag].

    After the first poll no gap exceeds `MAX_GAP_SHARE` of the age (or `MAX_GAP_FLOOR`):
    between two kinds of task the history may hold no end at all, and a service that
    changes its pace must not find a plan blind there for twenty seconds.

    On a grid g_0 = 0 < g_1 < ... < g_n = end, with F the CDF and S = 1 - F, the cost
    still to pay after an unsuccessful poll at g_i, weighted by S(g_i), is
        W(i) = min over j of  S(g_i) + lag_cost * ∫_{g_i}^{g_j} (F(u) - F(g_i)) du + W(j),
    with W(n) = 0: one request for every task still running at g_i, and for each task
    ending in (g_i, g_j] the wait until g_j.
    """
    steps = max(int(math.ceil(end / 0.05)), 1)
    steps = min(steps, 400)  # the grid stays fine (0.05 s, or end/400) and the search quadratic but small
    grid = [end * k / steps for k in range(steps + 1)]
    F = [cdf(t) for t in grid]
    area = [0.0]  # area[k] = ∫_0^{g_k} F(u) du, trapezoids
    for k in range(1, steps + 1):
        area.append(area[-1] + (F[k - 1] + F[k]) * (grid[k] - grid[k - 1]) / 2)
    min_steps = max(int(math.ceil(min_gap / (end / steps) - 1e-9)), 1)
    best = [math.inf] * (steps + 1)
    choice = [steps] * (steps + 1)
    best[steps] = 0.0
    for i in range(steps - 1, -1, -1):
        survive, fi, ai, gi = 1.0 - F[i], F[i], area[i], grid[i]
        first = i + min_steps if i > 0 else i + 1  # the gap rules are between polls; submit is not a poll
        widest = max(MAX_GAP_FLOOR, MAX_GAP_SHARE * gi) if i > 0 else end
        for j in range(first, steps + 1):  # none when too close to the end: W(i) stays infinite
            if grid[j] - gi > widest + 1e-9 and j > first:
                break
            cost = survive + lag_cost * (area[j] - ai - fi * (grid[j] - gi)) + best[j]
            if cost < best[i]:
                best[i], choice[i] = cost, j
    times, k = [], 0
    while k < steps:
        k = choice[k]
        times.append(grid[k])
    return tuple(times)


class LearnedSchedule:
    """Poll times planned from the durations of finished tasks like this one; see the module docstring."""

    def __init__(
        self,
        poll_times: Sequence[float],
        fallback: FixedSchedule,
        density: _LogKernelDensity | None = None,
        lag_cost: float | None = None,
    ) -> None:
        self.poll_times = tuple(poll_times)
        self.fallback = fallback
        self.lag_cost = lag_cost  # what the plan was made for (None: no plan)
        self._density = density

    @classmethod
    def from_durations(
        cls,
        durations: Sequence[float],
        fallback: FixedSchedule | None = None,
        *,
        min_samples: int = 5,
        lag_cost: float = 6.0,
    ) -> LearnedSchedule:
        """Plan from `durations` (seconds, same resolution); under `min_samples` usable ones, the fallback.

        `lag_cost` is how many status requests one second of lag is worth: higher
        polls more densely around the likely end.
        """
        fallback = fallback or FixedSchedule()
        usable = [float(d) for d in durations if _is_number(d) and math.isfinite(d) and d > 0]
        if len(usable) < max(min_samples, 1):
            return cls((), fallback)
        density = _LogKernelDensity(usable)
        return cls(_plan(density.cdf, density.quantile(TAIL_QUANTILE), lag_cost, MIN_GAP), fallback, density, lag_cost)

    def with_lag_cost(self, lag_cost: float) -> LearnedSchedule:
        """The same history planned for another `lag_cost` (the fallback as it is, without history)."""
        if self._density is None or lag_cost == self.lag_cost:
            return self
        plan = _plan(self._density.cdf, self._density.quantile(TAIL_QUANTILE), lag_cost, MIN_GAP)
        return LearnedSchedule(plan, self.fallback, self._density, lag_cost)

    @property
    def learned(self) -> bool:
        """False when there was too little history and the fallback decides everything."""
        return bool(self.poll_times)

    def next_poll(self, age: float, polls_so_far: int = 0) -> float:
        """The first planned poll after `age` (at least `MIN_GAP` later); past the plan, the fallback's cadence.

        Decided by age alone, so a poll the budget delayed does not shift the later ones.
        """
        if not self.poll_times:
            return self.fallback.next_poll(age, polls_so_far)
        k = bisect.bisect_right(self.poll_times, age)
        if k < len(self.poll_times):
            return max(self.poll_times[k], age + MIN_GAP)
        return age + self.fallback.every(age)

    def likely_done(self, age: float) -> float:
        """Share of the history that had ended by `age` (smoothed); 0.0 without history."""
        return self._density.likely_done(age) if self._density else 0.0

    def __repr__(self) -> str:
        plan = ", ".join(f"{t:.2f}" for t in self.poll_times)
        return f"LearnedSchedule([{plan}], fallback={self.fallback!r})"


# -- load --------------------------------------------------------------------

LAG_COSTS = (6.0, 12.0, 24.0, 48.0)  # status requests one second of lag is worth, from busy to idle


def lag_cost_for(share: float) -> float:
    """The lag cost a task can afford when the request budget gives each pending task `share` requests/s.

    A thousand tasks at 400/s (0.4 each) plan sparsely, as few polls as the lag allows; a
    handful of cells at 20/s (several each) spend requests on being seen sooner.
    """
    if not share >= 2.0:  # NaN as well
        return LAG_COSTS[0]
    return LAG_COSTS[min(len(LAG_COSTS) - 1, int(math.log2(share)))]


class LoadAwareSchedule:
    """One learned history planned for each of `LAG_COSTS`; every poll follows the plan that the
    kernel's load allows at that moment (`lag_cost()`, read at each poll).

    The plans are decided by age alone, so moving between them is seamless: the next poll is
    the chosen plan's first time after the task's age. Each is made when first needed (a few ms
    each, and the submit that asks first runs on the kernel's main thread); two threads needing
    the same one at once may both make it, which costs time, never correctness.
    """

    def __init__(self, learned: LearnedSchedule, lag_cost: Callable[[], float]) -> None:
        self.fallback = learned.fallback
        self._learned = learned
        self._lag_cost = lag_cost
        self._plans: dict[float, LearnedSchedule] = {}

    def plan_for(self, cost: float) -> LearnedSchedule:
        """The history planned for lag cost `cost` (the fallback alone without history)."""
        plan = self._plans.get(cost)
        if plan is None:
            plan = self._plans[cost] = self._learned.with_lag_cost(cost)
        return plan

    @property
    def plans(self) -> dict[float, LearnedSchedule]:
        """Every plan, by lag cost (made now if not yet); empty without history."""
        return {cost: self.plan_for(cost) for cost in LAG_COSTS} if self.learned else {}

    @property
    def learned(self) -> bool:
        return self._learned.learned

    def current(self) -> LearnedSchedule:
        """The plan for the load now."""
        return self.plan_for(self._lag_cost()) if self.learned else self._learned

    def next_poll(self, age: float, polls_so_far: int = 0) -> float:
        return self.current().next_poll(age, polls_so_far)

    def likely_done(self, age: float) -> float:
        return self._learned.likely_done(age)

    def __repr__(self) -> str:
        return f"LoadAwareSchedule(now={self.current()!r})"
