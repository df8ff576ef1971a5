"""Fault plans: which request gets which misbehaviour.

A fault belongs to a *phase* (the kind of request it hits) and has a *kind* (what goes
wrong). Faults are queued for the next N requests of a phase, or drawn at random from a
realistic mix with a seeded generator so a failing run can be replayed exactly.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

PHASES = ("submit", "poll", "credits", "download")

_API = PHASES
_DOWNLOAD = ("download",)

# kind -> (phases it may hit, its options with their defaults)
KINDS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    # answered in place of the service: for submit, no task is created
    "status": (_API, {"status": 500, "style": None, "retry_after": None}),
    "malformed": (_API, {}),
    "html": (_API, {"status": 200}),
    # the request is served, then the answer goes wrong on the way back
    "reset": (_API, {}),
    "delay": (_API, {"seconds": 5.0}),
    # file host only
    "truncate": (_DOWNLOAD, {}),
    "corrupt": (_DOWNLOAD, {}),
    "not_found": (_DOWNLOAD, {}),
    "wrong_type": (_DOWNLOAD, {}),
    "slow": (_DOWNLOAD, {"seconds": 5.0}),
    "bomb": (_DOWNLOAD, {}),
    "endless": (_DOWNLOAD, {"limit_bytes": 1 << 30}),
    "forbidden": (_DOWNLOAD, {}),
    "content_type": (_DOWNLOAD, {"type": "binary/octet-stream"}),
    "trailing_data": (_DOWNLOAD, {"bytes": 4096}),
    # record-info only
    "huge_json": (("poll",), {"megabytes": 64}),
    "server_exception": (("poll",), {}),
    # submit only: the task is created and charged, then fails
    "task_fails": (("submit",), {"flag": 3, "code": 400, "message": "flagged by content policy"}),
    "generation_failed": (("submit",), {"code": 501, "message": "generation failed"}),
    # submit only: the task is created and charged, then departs from the documented life cycle
    "not_registered": (("submit",), {"polls": 2}),
    "odd_flag": (("submit",), {"flag": 7}),
    "no_url": (("submit",), {"shape": "null"}),
}

#: One line per kind, for help texts.
DESCRIPTIONS = {
    "status": "answer with an API error code (style json/http; Retry-After when retry_after is set)",
    "malformed": "HTTP 200, application/json, broken JSON",
    "html": "an HTML proxy error page (HTTP 200 unless status is set)",
    "reset": "serve the request (a submit creates and charges its task), then TCP RST mid-answer",
    "delay": "serve the request, then wait `seconds` before answering",
    "truncate": "send half the file, then close the connection",
    "corrupt": "random bytes with an image content type",
    "not_found": "404: the URL has expired",
    "wrong_type": "HTTP 200 with an HTML page instead of the image",
    "slow": "drip the file over `seconds`",
    "bomb": "a tiny valid PNG over twice Pillow's decompression-bomb limit",
    "endless": "an image body that never ends (stops at limit_bytes or when the client hangs up)",
    "forbidden": "403 AccessDenied from the file host (a CDN refusing the client), not an expiry",
    "content_type": "the real file, labelled with Content-Type `type` (e.g. application/octet-stream)",
    "trailing_data": "the real file with `bytes` extra bytes after its end marker (still a valid image)",
    "huge_json": "a valid record-info answer padded to `megabytes`",
    "server_exception": "JSON code 500 \"Server exception, please check the parameters\"",
    "task_fails": "create and charge the task, which then ends with successFlag `flag`",
    "generation_failed": "the task fails; its record-info then answers JSON code `code` with msg `message`",
    "not_registered": "create and charge the task, but answer its first `polls` polls with 404 task not found",
    "odd_flag": "the task ends with the undocumented successFlag `flag`, no result URL",
    "no_url": "the task ends with successFlag 1 but no URL, for good (shape null, empty or missing)",
}

#: Kinds that answer without letting the service see the request.
REPLACING_KINDS = frozenset(
    {
        "status",
        "malformed",
        "html",
        "corrupt",
        "not_found",
        "wrong_type",
        "bomb",
        "endless",
        "forbidden",
        "server_exception",
    }
)

#: Shapes of a "success without a URL": resultImageUrl null, resultImageUrl "", or response null.
URL_SHAPES = ("null", "empty", "missing")
DOCUMENTED_FLAGS = (0, 1, 2, 3)

RANDOM_DELAY_MAX = 1.0


@dataclass(frozen=True)
class Fault:
    """One misbehaviour for one request; options are filled with their defaults."""

    phase: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"unknown fault phase {self.phase!r}; phases: {', '.join(PHASES)}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; kinds: {', '.join(KINDS)}")
        phases, defaults = KINDS[self.kind]
        if self.phase not in phases:
            raise ValueError(f"fault kind {self.kind!r} only applies to phase(s) {', '.join(phases)}")
        unknown = set(self.options) - set(defaults)
        if unknown:
            allowed = ", ".join(defaults) or "none"
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))} for {self.kind!r}; allowed: {allowed}")
        object.__setattr__(self, "options", {**defaults, **self.options})
        _check_option_values(self.kind, self.options)

    def __getitem__(self, option: str) -> Any:
        return self.options[option]

    @property
    def replaces_answer(self) -> bool:
        """True when the service never sees the request (no task, no charge)."""
        return self.kind in REPLACING_KINDS


def _check_option_values(kind: str, options: dict[str, Any]) -> None:
    status = options.get("status")
    if status is not None and (not isinstance(status, int) or not 100 <= status <= 999):
        raise ValueError(f"status must be an HTTP status code (100..999); got {status!r}")
    style = options.get("style")
    if style not in (None, "json", "http"):
        raise ValueError(f"style must be json or http; got {style!r}")
    for name in ("seconds", "retry_after", "megabytes", "limit_bytes", "bytes", "polls"):
        value = options.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be a number >= 0; got {value!r}")
    if kind == "task_fails" and options["flag"] not in (2, 3):
        raise ValueError(f"a failed task ends with successFlag 2 or 3, not {options['flag']!r}")
    if kind == "odd_flag" and (not isinstance(options["flag"], int) or options["flag"] in DOCUMENTED_FLAGS):
        raise ValueError(f"odd_flag needs an undocumented successFlag (not 0..3); got {options['flag']!r}")
    if kind == "no_url" and options["shape"] not in URL_SHAPES:
        raise ValueError(f"shape must be one of {', '.join(URL_SHAPES)}; got {options['shape']!r}")
    if kind == "content_type" and not (isinstance(options["type"], str) and options["type"].strip()):
        raise ValueError(f"type must be a non-empty Content-Type; got {options['type']!r}")
    if kind == "generation_failed" and not (isinstance(options["code"], int) and 100 <= options["code"] <= 999):
        raise ValueError(f"code must be an API error code (100..999); got {options['code']!r}")


def parse_fault(spec: str) -> tuple[Fault, int]:
    """Parse ``PHASE:KIND[:COUNT][:key=value,...]`` into a fault and its count.

    >>> parse_fault("submit:status:2:status=429,retry_after=1")
    (Fault(phase='submit', kind='status', options={'status': 429, 'style': None, 'retry_after': 1}), 2)
    """
    parts = spec.split(":", 2)
    if len(parts) < 2:
        raise ValueError(f"fault {spec!r} is not PHASE:KIND[:COUNT][:key=value,...]")
    phase, kind = parts[0].strip(), parts[1].strip()
    count, options_text = 1, ""
    if len(parts) == 3:
        head, _, tail = parts[2].partition(":")
        if head.strip().isdigit():
            count, options_text = int(head), tail
        else:
            options_text = parts[2]
    options = {}
    for item in filter(None, (piece.strip() for piece in options_text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"fault option {item!r} is not key=value")
        options[key.strip()] = _coerce(value.strip())
    if count < 1:
        raise ValueError(f"fault count must be at least 1, got {count}")
    return Fault(phase, kind, options), count


def _coerce(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _random_mix(phase: str, rng: random.Random) -> Fault:
    """One fault of the kinds a real deployment produces now and then."""
    common = [
        ("status", {"status": 429, "retry_after": 0}),
        ("status", {"status": 500}),
        ("status", {"status": 503}),
    ]
    mixes = {
        "submit": common + [("task_fails", {})],
        "poll": common + [("reset", {}), ("malformed", {}), ("delay", None)],
        "credits": common,
        "download": [("truncate", {}), ("corrupt", {})],
    }
    kind, options = rng.choice(mixes[phase])
    if options is None:
        options = {"seconds": round(rng.uniform(0.05, RANDOM_DELAY_MAX), 2)}
    return Fault(phase, kind, dict(options))


class FaultPlan:
    """Faults waiting for requests. Thread-safe: ``_lock`` guards the queues and the RNG."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[str, list[list]] = {phase: [] for phase in PHASES}
        self._rate = 0.0
        self._rng = random.Random(0)

    def add(self, fault: Fault, count: int = 1) -> None:
        """Queue ``fault`` for the next ``count`` requests of its phase."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        with self._lock:
            self._queued[fault.phase].append([fault, count])

    def set_random(self, rate: float, seed: int) -> None:
        """Give every later request a fault with probability ``rate`` (0 turns it off)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {rate}")
        with self._lock:
            self._rate = rate
            self._rng = random.Random(seed)

    def take(self, phase: str) -> Fault | None:
        """The fault for the request that just arrived in ``phase``, if any."""
        with self._lock:
            queue = self._queued.get(phase)
            if queue:
                entry = queue[0]
                entry[1] -= 1
                if entry[1] == 0:
                    queue.pop(0)
                return entry[0]
            if phase in PHASES and self._rate > 0 and self._rng.random() < self._rate:
                return _random_mix(phase, self._rng)
            return None

    def pending(self) -> list[tuple[Fault, int]]:
        """Queued faults with their remaining counts, in the order they will fire."""
        with self._lock:
            return [(fault, left) for queue in self._queued.values() for fault, left in queue]

    def clear(self) -> None:
        """Forget queued faults and switch random faults off."""
        with self._lock:
            for queue in self._queued.values():
                queue.clear()
            self._rate = 0.0
