"""Realism for long runs: task durations that vary like the live service's, and the limits
a busy service enforces (requests per second, tasks generating at once)."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

DURATION_MODES = ("fixed", "lognormal")

#: Median seconds per resolution: inside API.md's "10 to 60 seconds", 4K taking longest.
DEFAULT_MEDIANS = {"1K": 15.0, "2K": 20.0, "4K": 30.0}
#: With sigma 0.35 about 95 % of the draws lie within 0.5x..2x the median.
DEFAULT_SIGMA = 0.35
MAX_SIGMA = 3.0

#: Length of the rate limit's sliding window, in seconds.
WINDOW = 1.0


class LognormalDurations:
    """Seeded lognormal durations per resolution.

    The k-th task created gets the k-th draw, so a run with the same seed and the same
    order of resolutions replays exactly.
    """

    def __init__(
        self, medians: Mapping[str, float] | None = None, sigma: float = DEFAULT_SIGMA, seed: int = 1234
    ) -> None:
        self.medians = {**DEFAULT_MEDIANS, **(medians or {})}
        for resolution, median in self.medians.items():
            if resolution not in DEFAULT_MEDIANS:
                raise ValueError(f"unknown resolution {resolution!r} for a median; use {', '.join(DEFAULT_MEDIANS)}")
            if not isinstance(median, (int, float)) or isinstance(median, bool) or median <= 0:
                raise ValueError(f"the median of {resolution} must be a number > 0 seconds; got {median!r}")
        if not isinstance(sigma, (int, float)) or not 0 <= sigma <= MAX_SIGMA:
            raise ValueError(f"sigma must be between 0 and {MAX_SIGMA}; got {sigma!r}")
        self.sigma = float(sigma)
        self.seed = seed
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        return f"LognormalDurations(medians={self.medians!r}, sigma={self.sigma!r}, seed={self.seed!r})"

    def draw(self, resolution: str) -> float:
        """Seconds the next task of ``resolution`` generates. Not thread-safe: the store locks."""
        return self._rng.lognormvariate(math.log(self.medians[resolution]), self.sigma)

    def restart(self) -> None:
        """Start the sequence of draws again from the seed."""
        self._rng = random.Random(self.seed)


class RateLimiter:
    """Admits at most ``limit`` requests in any sliding one-second window.

    Refused requests do not count: a client that backs off is not punished for asking.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._admitted: deque[float] = deque()
        self._clock = clock

    def admit(self, limit: int) -> float | None:
        """None when the request may pass, else the seconds until a slot frees up."""
        now = self._clock()
        with self._lock:
            while self._admitted and self._admitted[0] <= now - WINDOW:
                self._admitted.popleft()
            if len(self._admitted) < limit:
                self._admitted.append(now)
                return None
            return self._admitted[0] + WINDOW - now

    def clear(self) -> None:
        """Forget the requests admitted so far."""
        with self._lock:
            self._admitted.clear()


def retry_after_seconds(wait: float) -> int:
    """Retry-After is whole seconds; never 0, or a client would retry at once into the limit."""
    return max(1, math.ceil(wait))


def peak_in_window(times: Iterable[float], window: float = WINDOW) -> int:
    """The most events that fall within any half-open interval of ``window`` seconds."""
    ordered = sorted(times)
    peak, start = 0, 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - window:
            start += 1
        peak = max(peak, end - start + 1)
    return peak
