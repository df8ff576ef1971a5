"""Figures measured in one real kernel (jupyter_client), with the emulator in a child process.

- how long a `%%nanobanana --no-wait` cell holds the kernel, against a plain submit cell;
- completion-to-display lag for emulator latencies of 2, 10 and 30 s (default poll schedule);
- 50 concurrent tasks: wall time against the ideal, and trivial-cell latency meanwhile.

All times are taken on the frontend's side of the kernel protocol (see kernel_driver.py), the
kernel runs with the product's default settings apart from the output directory.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from emulator_host import EmulatorHost
from kernel_driver import Kernel
from kernel_helpers import kernel_environment
from report import Row, Section, median, ms, p95, sec

KEY = "emulator-benchmark-key"  # the emulator's own key: not a secret
SETUP = """\
%load_ext nanobanana_magic
import time, nanobanana_magic
from nanobanana_magic import GenerationRequest
_client = nanobanana_magic.config().session.connection
"""
HOLD_TARGET_EXTRA = 0.020
LAG_P50, LAG_P95, POLL_RATE = 0.5, 1.5, 1.0
WALL_RATIO, TRIVIAL_TARGET = 1.3, 0.020


def _pause(seconds: float) -> None:
    threading.Event().wait(seconds)


def _new_output_dir(kernel: Kernel, root: Path, name: str) -> None:
    folder = root / name
    kernel.run(f"%config NanoBananaMagics.output_dir = {str(folder)!r}")


# -- kernel hold --------------------------------------------------------------------


def hold(kernel: Kernel, emulator: EmulatorHost, root: Path, runs: int) -> Section:
    """`--no-wait` cell vs a cell that only submits with the same client, interleaved."""
    section = Section("Kernel hold of a `--no-wait` cell")
    emulator.set_latency(2.0)
    _new_output_dir(kernel, root, "hold")
    first = kernel.run("%%nanobanana --no-wait\nhold warm-up").seconds
    kernel.run("_client.submit(GenerationRequest(prompt='plain warm-up'))")
    ours, plain, empty, paired = [], [], [], []
    for i in range(runs):
        p = kernel.run(f"_client.submit(GenerationRequest(prompt='plain {i}'))").seconds
        o = kernel.run(f"%%nanobanana --no-wait\nhold {i}").seconds
        empty.append(kernel.run("pass").seconds)
        plain.append(p)
        ours.append(o)
        paired.append(o - p)
    extra = median(paired)
    section.rows.append(
        Row(
            "`--no-wait` cell holds the kernel (execute_request → execute_reply)",
            f"median {ms(median(ours))}, p95 {ms(p95(ours))}",
            "≤ submit round trip + 20 ms",
            extra <= HOLD_TARGET_EXTRA,
            f"+{ms(extra)} over the plain submit" if extra >= 0 else f"{ms(extra)} vs the plain submit",
            f"{runs} cells",
        )
    )
    section.rows.append(
        Row(
            "plain submit cell, same kernel (`_client.submit(...)`)",
            f"median {ms(median(plain))}, p95 {ms(p95(plain))}; an empty cell: median {ms(median(empty))}",
            runs=f"{runs} cells",
        )
    )
    section.notes.append(
        f"Each iteration runs a plain submit cell (the session's own client, `_client.submit(GenerationRequest(...))`), "
        f"a `%%nanobanana --no-wait` cell and an empty cell, so all three see the same machine state; the verdict "
        f"uses the median of the per-iteration difference ours − plain ({ms(extra)}; p95 of the difference "
        f"{ms(p95(paired))}). The emulator answers in its own process; tasks take 2 s, so earlier tasks finish "
        f"(poll, download, preview in worker threads) while later cells run, as in a real session."
    )
    section.notes.append(
        f"The first `--no-wait` cell of a kernel took {ms(first)} (it opens the HTTP "
        "connection, creates the output directory and its run log, and starts the poller's "
        "threads); it is not in the median."
    )
    return section


# -- completion-to-display lag --------------------------------------------------------


def lag(
    kernel: Kernel,
    emulator: EmulatorHost,
    root: Path,
    per_latency: int,
    latencies: tuple[float, ...] = (2.0, 10.0, 30.0),
) -> Section:
    """Tasks at each latency, all in flight together; lag = result arrives at the frontend − emulator done."""
    section = Section("Completion-to-display lag")
    _new_output_dir(kernel, root, "lag")
    kernel.run("_schedule = nanobanana_magic.config().poll_schedule")
    groups: dict[tuple[float, str], list[str]] = {}
    for latency in sorted(latencies, reverse=True):  # the longest first, so that all end about together
        for variant in ("exact", "spread"):
            for k in range(per_latency):
                offset = k / per_latency if variant == "spread" else 0.0
                emulator.set_latency(latency + offset)
                cell = kernel.run(f"%%nanobanana --no-wait\nlag {latency:g} {variant} {k}")
                groups.setdefault((latency, variant), []).extend(cell.task_ids)
    everything = [t for ids in groups.values() for t in ids]
    kernel.wait_ended(everything, timeout=max(latencies) + 60)
    facts = emulator.tasks()
    schedule = kernel.run("print(_schedule)").stdout.strip()
    for latency in latencies:
        rows = {variant: _lag_figures(groups[(latency, variant)], facts, kernel) for variant in ("exact", "spread")}
        exact, spread = rows["exact"], rows["spread"]
        for variant, fig in rows.items():
            lags, rate = fig["lags"], statistics.fmean(fig["rates"])
            met = median(lags) <= LAG_P50 and p95(lags) <= LAG_P95 and rate <= POLL_RATE
            label = (
                f"lag, L = {latency:g} s"
                if variant == "exact"
                else f"lag, L = {latency:g} s + 0…{(per_latency - 1) / per_latency:.1f} s spread"
            )
            section.rows.append(
                Row(
                    label,
                    f"p50 {sec(median(lags))}, p95 {sec(p95(lags))}; {median(fig['polls']):.0f} status requests "
                    f"per task ({rate:.2f}/s)",
                    "p50 ≤ 0.5 s, p95 ≤ 1.5 s, ≤ 1 request/s",
                    met,
                    _lag_margin(lags, rate),
                    f"{len(lags)} tasks",
                )
            )
        section.notes.append(
            f"L = {latency:g} s: of the lag, detection (done → the first status request that saw it) is p50 "
            f"{sec(median(exact['detect']))} exact / {sec(median(spread['detect']))} spread; the rest (download, "
            f"save, preview, publish, ZMQ) p50 {sec(median(exact['process'] + spread['process']))}, "
            f"p95 {sec(p95(exact['process'] + spread['process']))}."
        )
    section.notes.insert(
        0,
        (
            f"{per_latency} tasks per latency and variant ({len(everything)} tasks), all submitted by `--no-wait` cells "
            f"in one kernel and in flight together, with the product's default poll schedule {schedule}. Lag = the time "
            "the frontend received the final `update_display_data` of the cell (iopub, stamped by a listener thread in "
            "the benchmark process) − `done_at` of the task in the emulator; both are `time.time()` on this machine. "
            "Status requests per task and their times come from the emulator's request log; the rate is requests / "
            "(display time − created)."
        ),
    )
    section.notes.insert(
        1,
        (
            f"The schedule is the product's default ({schedule}): 'auto' learns per resolution from this output "
            "directory, where the tasks of all three latencies are 1K tasks, so once ten have finished one plan "
            "covers 2, 10 and 30 s tasks alike (dense near each kind's end, no gap over a quarter of the age); "
            "how dense depends on the load: the default budget of 20 requests per second shared by up to 60 "
            "pending tasks is a third of a request a second each, the busiest of the plans. The 60 submits pass "
            "the same budget."
        ),
    )
    section.notes.insert(
        2,
        (
            "'exact' gives every task exactly L, as the issue asks: the 1 s poll grid then stays in phase with the "
            "emulator's clock, so the poll after completion comes only the accumulated drift later (each interval "
            "is 1 s plus the poll's own duration), which no real service does. 'spread' adds "
            f"0, 1/{per_latency}, … of a second to L so that completion falls anywhere between two polls, as with a "
            "real service. Polling every second, the wait for the next poll is uniform on 0…1 s: its median is "
            "0.5 s by itself, so p50 ≤ 0.5 s including download and preview cannot be met at ≤ 1 request/s without "
            "a push channel (the API's callBackUrl needs a public URL, which a notebook does not have)."
        ),
    )
    return section


def _lag_figures(task_ids: list[str], facts: dict[str, dict[str, Any]], kernel: Kernel) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"lags": [], "detect": [], "process": [], "polls": [], "rates": []}
    for task_id in task_ids:
        fact = facts[task_id]
        shown, _ = kernel.ended[task_id]
        done = fact["done_at"]
        seen = min((t for t in fact["polls"] if t >= done), default=shown)
        out["lags"].append(shown - done)
        out["detect"].append(seen - done)
        out["process"].append(shown - seen)
        out["polls"].append(len(fact["polls"]))
        out["rates"].append(len(fact["polls"]) / (shown - fact["created"]))
    return out


def _lag_margin(lags: list[float], rate: float) -> str:
    parts = []
    for name, value, target in (("p50", median(lags), LAG_P50), ("p95", p95(lags), LAG_P95)):
        parts.append(f"{name} {'+' if value > target else '−'}{abs(value - target):.2f} s")
    parts.append(f"rate {'+' if rate > POLL_RATE else '−'}{abs(rate - POLL_RATE):.2f}/s")
    return ", ".join(parts)


# -- 50 concurrent tasks ---------------------------------------------------------------

CONCURRENT_CELL = """\
for _i in range({n}):
    get_ipython().run_cell_magic("nanobanana", "--no-wait", f"concurrent {run} {{_i}}")
"""


def concurrent(
    kernel: Kernel,
    emulator: EmulatorHost,
    root: Path,
    runs: int,
    tasks: int = 50,
    latency: float = 2.0,
    gap: float = 0.1,
) -> Section:
    """`tasks` submitted at once; trivial cells every `gap` s until every result is shown."""
    section = Section(f"{tasks} concurrent tasks")
    emulator.set_latency(latency)
    idle = [kernel.run("_x = 1").seconds for _ in range(20)]
    walls, submits, trivial, cpu = [], [], [], []
    phases: dict[str, list[float]] = {"done": [], "seen": [], "downloaded": []}
    for run in range(runs):
        _new_output_dir(kernel, root, f"concurrent-{run}")
        cpu_before = kernel.cpu_seconds()
        started = time.time()
        cell = kernel.run(CONCURRENT_CELL.format(n=tasks, run=run))
        submits.append(time.time() - started)
        ids = cell.task_ids
        if len(ids) != tasks:
            raise RuntimeError(f"expected {tasks} generations, the cell showed {len(ids)}")
        samples = []
        while not all(t in kernel.ended for t in ids):
            samples.append(kernel.run("_x = 1").seconds)
            _pause(gap)
        last = max(kernel.ended[t][0] for t in ids)
        cpu.append(kernel.cpu_seconds() - cpu_before)
        walls.append(last - started)
        trivial.extend(samples)
        facts = emulator.tasks()
        for phase, times in _last_phases(ids, facts).items():
            phases[phase].append(times - started)
        failed = [t for t in ids if kernel.ended[t][1] != "succeeded"]
        if failed:
            raise RuntimeError(f"{len(failed)} of the concurrent tasks failed")
        _pause(0.5)  # let the last downloads' threads settle before the next run
    ratio = [w / latency for w in walls]
    section.rows.append(
        Row(
            f"{tasks} concurrent tasks, L = {latency:g} s: wall / ideal",
            f"median {median(ratio):.2f}× ({sec(median(walls))} for an ideal {sec(latency)}); submitting took "
            f"{sec(median(submits))}",
            f"≤ {WALL_RATIO}×",
            median(ratio) <= WALL_RATIO,
            f"{median(ratio) - WALL_RATIO:+.2f}×",
            f"{runs} runs",
        )
    )
    trivial_median = median(trivial)
    section.rows.append(
        Row(
            f"trivial cell (`_x = 1`) while the {tasks} are pending",
            f"median {ms(trivial_median)}, p95 {ms(p95(trivial))} (idle kernel: median {ms(median(idle))})",
            f"≤ {ms(TRIVIAL_TARGET)}",
            trivial_median <= TRIVIAL_TARGET,
            f"median {ms(abs(trivial_median - TRIVIAL_TARGET))} {'under' if trivial_median <= TRIVIAL_TARGET else 'over'}"
            + (f"; p95 {ms(p95(trivial) - TRIVIAL_TARGET)} over" if p95(trivial) > TRIVIAL_TARGET else ""),
            f"{len(trivial)} cells in {runs} runs",
        )
    )
    section.notes.append(
        f"Each run: one cell calls `%%nanobanana --no-wait` {tasks} times (distinct prompts, so no cache hits), "
        f"then a trivial cell runs every {ms(gap)} until the frontend has received all {tasks} results. Wall = that "
        f"cell's execute_request → the last result's `update_display_data`; ideal = the emulator latency "
        f"({sec(latency)}): every task running at once and no client overhead. Wall per run: "
        f"{', '.join(sec(w) for w in walls)}."
    )
    per_task_cpu = median(cpu) / tasks
    section.notes.append(
        f"Where the time goes (medians, seconds after the submit cell was sent): the emulator had ended every task "
        f"at {sec(median(phases['done']))}, the last status request that found its task done came at "
        f"{sec(median(phases['seen']))}, the last download at {sec(median(phases['downloaded']))}, the last result "
        f"reached the frontend at {sec(median(walls))}. The kernel process used {sec(median(cpu))} of CPU per run "
        f"({ms(per_task_cpu)} per task, the trivial cells included), mostly in the worker threads: per result, "
        f"the client's download check (PNG chunk CRCs / JPEG markers, no pixel decode), the one decode and "
        f"JPEG encode of the preview, the HTTP requests and the publish. On 2 cores, shared with the emulator "
        f"and this benchmark, finishing 50 results takes about {sec(median(walls) - median(phases['done']))}, "
        f"which is what separates the wall time from the ideal."
    )
    section.notes.append(
        f"The {tasks} submits pass the kernel's request budget (default 20 requests per second, shared with the "
        f"status requests): submitting alone takes about {sec(tasks / 20)}, which the wall time includes."
    )
    if p95(trivial) > TRIVIAL_TARGET:
        section.notes.append(
            "The trivial cells' p95 comes from the cells that land in that burst: the kernel's main thread waits "
            "for one of the 2 cores and for the GIL, which the worker threads take between Pillow calls "
            "(requests, JSON, building and publishing the outputs). The median stays near the idle kernel's."
        )
    return section


def _last_phases(task_ids: list[str], facts: dict[str, dict[str, Any]]) -> dict[str, float]:
    """When the last task ended at the emulator, was first seen done by a poll, was downloaded (time.time())."""
    done = [facts[t]["done_at"] for t in task_ids]
    seen = [min(p for p in facts[t]["polls"] if p >= facts[t]["done_at"]) for t in task_ids]
    downloaded = [max(facts[t]["downloads"]) for t in task_ids]
    return {"done": max(done), "seen": max(seen), "downloaded": max(downloaded)}


# -- entry point -----------------------------------------------------------------------


def run(
    hold_runs: int, lag_tasks: int, concurrent_runs: int, concurrent_tasks: int = 50, shared_render: bool = True
) -> list[Section]:
    sections = []
    with tempfile.TemporaryDirectory(prefix="bench-kernel-") as tmp:
        root = Path(tmp)
        with EmulatorHost(latency=2.0, api_key=KEY, shared_render=shared_render) as emulator:
            env = kernel_environment(emulator.url, root / "out", KEY)
            with Kernel(root, env) as kernel:
                kernel.run(SETUP)
                for name, bench in (
                    ("hold", lambda: hold(kernel, emulator, root, hold_runs)),
                    ("lag", lambda: lag(kernel, emulator, root, lag_tasks)),
                    ("concurrent", lambda: concurrent(kernel, emulator, root, concurrent_runs, concurrent_tasks)),
                ):
                    started = time.monotonic()
                    section = bench()
                    section.seconds = time.monotonic() - started
                    sections.append(section)
                    print(f"  {name}: {section.seconds:.0f} s", flush=True)
    return sections
