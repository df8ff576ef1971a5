"""Statistics, the machine's description and the Markdown of RESULTS.md."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    """95th percentile, linear between the closest ranks (the max of fewer than ~20 values)."""
    ordered = sorted(values)
    position = 0.95 * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def sec(seconds: float) -> str:
    return f"{seconds:.2f} s"


def kib(size: float) -> str:
    return f"{size / 1024:.0f} KiB" if size < 10 * 1024 * 1024 else f"{size / 1024 / 1024:.1f} MiB"


@dataclass
class Row:
    """One line of the results table."""

    metric: str
    measured: str
    target: str = ""
    met: bool | None = None  # None: no target (a reference figure)
    margin: str = ""
    runs: str = ""

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "—"
        return ("met" if self.met else "**missed**") + (f" ({self.margin})" if self.margin else "")


@dataclass
class Section:
    """A benchmark's rows and the notes that explain them."""

    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import ipykernel
    import IPython
    import jupyter_client
    import nbclient
    import PIL

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            kb = int(next(line.split()[1] for line in handle if line.startswith("MemTotal")))
            memory = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": f"{os.cpu_count()} ({_nproc()} usable, `nproc`)",
        "cpu model": cpu,
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": (
            f"IPython {IPython.__version__}, ipykernel {ipykernel.__version__}, "
            f"jupyter_client {jupyter_client.__version__}, nbclient {nbclient.__version__}, "
            f"Pillow {PIL.__version__}"
        ),
    }


def _nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(len(os.sched_getaffinity(0)))


def reference_cpu_ms(repeats: int = 5) -> float:
    """The CPU time of a fixed workload (JSON, hashing, small-object Python: what a status request
    does), best of `repeats`. The same code measured hours apart on this kind of shared machine
    differed by up to a third; this figure shows how fast the machine was during a run."""
    import hashlib
    import json

    payload = {"code": 200, "msg": "success", "data": {"taskId": "0" * 32, "successFlag": 0, "response": None}}
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for n in range(4000):
            text = json.dumps({**payload, "n": n})
            parsed = json.loads(text)
            hashlib.sha256(text.encode()).hexdigest()
            sorted(parsed["data"].items())
        best = min(best, time.process_time() - started)
    return best * 1000


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def render(sections: list[Section], info: dict[str, str], preamble: list[str], total_seconds: float) -> str:
    """The whole RESULTS.md."""
    lines = ["# Benchmarks", "", "Written by `make bench` (`benchmarks/run.py`); do not edit by hand.", ""]
    lines += [f"- **{key}**: {value}" for key, value in info.items()]
    lines += [f"- **`make bench` took** {total_seconds:.0f} s", ""]
    lines += preamble + [""]
    lines += ["## Results", "", "| metric | measured | target | verdict | runs |", "|---|---|---|---|---|"]
    for section in sections:
        for row in section.rows:
            lines.append(f"| {row.metric} | {row.measured} | {row.target or '—'} | {row.verdict} | {row.runs} |")
    lines.append("")
    for section in sections:
        if section.notes:
            lines += [f"## {section.title}", ""]
            lines += [f"- {note}" for note in section.notes]
            lines.append(f"- ({section.seconds:.0f} s of the run)")
            lines.append("")
    return "\n".join(lines)
