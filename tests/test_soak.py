"""Soak: many generations through the poller against an emulator that misbehaves at random.

The fault mix is the emulator's realistic one (429/500/503 answers, failed tasks, dropped
and slow polls, malformed JSON, truncated or corrupt downloads) at a fixed seed, so a
failing run can be replayed. Nothing may be lost and nothing submitted twice.

Size: NANOBANANA_SOAK_SIZE (default 200), which takes well under two minutes on two cores.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import API_KEY
from reliability_helpers import SessionSettings, run_log_records

from nanobanana_magic.core.errors import NanoBananaError
from nanobanana_magic.core.params import GenerationRequest
from nanobanana_magic.emulator import Emulator
from nanobanana_magic.runtime.generation import Generation
from nanobanana_magic.session.session import Session

SIZE = int(os.environ.get("NANOBANANA_SOAK_SIZE", "200"))
FAULT_RATE = 0.10
SEED = 20260227
IN_FLIGHT = 12  # cells running at once: bounded like a user clicking "run all" on a batch
TASK_LATENCY = 0.1  # seconds from submit to done at the emulator
JOIN_LIMIT = 60.0  # one generation that hangs fails the soak instead of the global timeout

pytestmark = pytest.mark.slow


@dataclass
class CellResult:
    """How one cell ended: a Generation (any final state), or the error its submit raised."""

    index: int
    generation: Generation | None = None
    submit_error: BaseException | None = None

    @property
    def error(self) -> BaseException | None:
        return self.submit_error if self.generation is None else self.generation.exception


@pytest.fixture
def noisy_emulator():
    """A dedicated emulator with ~10% random faults at a fixed seed."""
    with Emulator(latency=TASK_LATENCY, api_key=API_KEY, credits=10**9) as emu:
        emu.random_faults(FAULT_RATE, SEED)
        yield emu


def _run_cell(session: Session, index: int) -> CellResult:
    request = GenerationRequest(prompt=f"soak test image number {index}: a lighthouse in a storm", output_format="jpg")
    try:
        generation = session.submit(request, force=True)
    except NanoBananaError as exc:
        return CellResult(index, submit_error=exc)
    if not generation.join(JOIN_LIMIT):
        raise AssertionError(f"cell {index}: task {generation.task_id} still pending after {JOIN_LIMIT:g} s")
    return CellResult(index, generation=generation)


def _is_clear(error: BaseException) -> bool:
    message = str(error)
    return isinstance(error, NanoBananaError) and bool(message) and "\n" not in message and API_KEY not in message


def test_soak_loses_nothing_and_never_submits_twice(
    noisy_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """N generations with random faults: each ends in an image or a clear error; none lost or doubled."""
    settings = SessionSettings.for_emulator(
        noisy_emulator.base_url, API_KEY, tmp_path / "out", timeout=JOIN_LIMIT, workers=4, client_options={"retries": 4}
    )  # the default count, fast backoff
    session = Session(settings)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="soak-cell") as cells:
            results = list(cells.map(lambda i: _run_cell(session, i), range(SIZE)))
    finally:
        session.close()
    seconds = time.monotonic() - started

    generations = [r.generation for r in results if r.generation is not None]
    succeeded = [g for g in generations if g.status == "succeeded"]
    errors = [r.error for r in results if r.error is not None]
    clear = [e for e in errors if _is_clear(e)]
    records = run_log_records(settings.output_dir)
    logged = {r["task_id"] for r in records}
    ended = {g.task_id for g in generations if g.done}
    created = set(noisy_emulator.tasks)
    lost = created - ended - logged
    unlogged = created - logged
    doubled = max(0, noisy_emulator.submit_count - len(generations))
    faults = Counter(f"{r.phase}:{r.fault.kind}" for r in noisy_emulator.requests if r.fault is not None)

    report = _report(
        SIZE,
        len(generations),
        len(succeeded),
        len(clear),
        len(errors) - len(clear),
        len(lost),
        doubled,
        len(noisy_emulator.requests),
        faults,
        seconds,
        Counter(type(e).__name__ for e in errors),
    )
    with capsys.disabled():
        print("\n" + report)

    assert len(succeeded) + len(errors) == SIZE, "every cell ends in an image or an error"
    assert len(clear) == len(errors), f"unclear errors: {[repr(e) for e in errors if not _is_clear(e)][:5]}"
    assert lost == set(), f"lost tasks: {sorted(lost)[:5]}"
    assert unlogged == set(), f"tasks the API created that the run log does not name: {sorted(unlogged)[:5]}"
    assert doubled == 0 and noisy_emulator.submit_count == len(generations)
    assert all(g.path is not None and Path(g.path).is_file() for g in succeeded)
    assert sum(faults.values()) > 0.05 * len(noisy_emulator.requests), "the fault mix did not fire"
    assert len(succeeded) >= 0.8 * SIZE, "most cells should survive a 10% fault rate"
    finished = Counter(r["task_id"] for r in records if r.get("event") == "finished")
    assert all(count == 1 for count in finished.values()), "a task's outcome was logged twice"


def _report(
    size: int,
    accepted: int,
    succeeded: int,
    clear: int,
    unclear: int,
    lost: int,
    doubled: int,
    requests: int,
    faults: Counter,
    seconds: float,
    error_classes: Counter,
) -> str:
    rows = [
        ("cells submitted", size),
        ("accepted (task id received)", accepted),
        ("succeeded (image saved)", succeeded),
        ("failed with a clear error", clear),
        ("failed with an unclear error (must be 0)", unclear),
        ("lost (must be 0)", lost),
        ("double-submitted (must be 0)", doubled),
        ("HTTP requests served", requests),
        ("faults injected", sum(faults.values())),
        ("wall time (s)", f"{seconds:.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"soak: {size} generations, {FAULT_RATE:.0%} random faults, seed {SEED}"]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    lines.append("  fault mix: " + ", ".join(f"{kind} {n}" for kind, n in sorted(faults.items())))
    lines.append("  errors: " + (", ".join(f"{name} {n}" for name, n in sorted(error_classes.items())) or "none"))
    return "\n".join(lines)
