"""`%load_ext nanobanana_magic` against an empty extension, each in a fresh IPython process.

Each sample is a new `python -c` process: IPython is imported and a shell made before the
clock starts, then `ip.run_line_magic("load_ext", NAME)` is timed with perf_counter. The two
extensions alternate so that a busy moment on the machine hits both alike.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from kernel_figures import load_ext_seconds
from kernel_helpers import kernel_environment
from report import Row, Section, median, ms, p95

EMPTY_EXTENSION = "bench_empty_extension"
TARGET = 0.025

TIMED = """
import json, sys, time
sys.path.insert(0, {folder!r})
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
before = set(sys.modules)
started = time.perf_counter()
ip.run_line_magic("load_ext", {name!r})
seconds = time.perf_counter() - started
new = sorted(set(sys.modules) - before)
print(json.dumps({{"seconds": seconds, "modules": len(new),
                   "heavy": [m for m in new if m.split(".")[0] in ("requests", "PIL", "ipywidgets", "urllib3")]}}))
"""


def time_load(name: str, folder: Path) -> dict:
    """One fresh process: seconds spent in `%load_ext name`, and the modules it imported."""
    done = subprocess.run(
        [sys.executable, "-c", TIMED.format(folder=str(folder), name=name)],
        capture_output=True,
        text=True,
        check=True,
        cwd=folder,
        timeout=120,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(runs: int, kernels: int) -> Section:
    section = Section("`%load_ext` in a fresh IPython process")
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        folder = Path(tmp)
        (folder / f"{EMPTY_EXTENSION}.py").write_text("def load_ipython_extension(ipython):\n    pass\n")
        time_load("nanobanana_magic", folder)  # warm-up: writes any missing .pyc, fills the page cache
        ours, empty, samples = [], [], []
        for _ in range(runs):
            empty.append(time_load(EMPTY_EXTENSION, folder)["seconds"])
            sample = time_load("nanobanana_magic", folder)
            ours.append(sample["seconds"])
            samples.append(sample)
        env = kernel_environment("http://127.0.0.1:9", folder / "out", "unused-key")  # loading sends nothing
        in_kernel = load_ext_seconds(env, folder, kernels)
    ours_median, empty_median = median(ours), median(empty)
    section.rows.append(
        Row(
            "`%load_ext nanobanana_magic`, fresh IPython process",
            f"median {ms(ours_median)}, p95 {ms(p95(ours))}",
            f"≤ {ms(TARGET)} median",
            ours_median <= TARGET,
            f"{ms(TARGET - ours_median)} to spare" if ours_median <= TARGET else f"{ms(ours_median - TARGET)} over",
            f"{runs} processes",
        )
    )
    section.rows.append(
        Row(
            "`%load_ext` of an empty extension, same run",
            f"median {ms(empty_median)}; ours is "
            f"{ours_median / empty_median:.0f}× that (+{ms(ours_median - empty_median)})",
            runs=f"{runs} processes",
        )
    )
    section.rows.append(
        Row(
            "`%load_ext nanobanana_magic`, first cell of a fresh ipykernel",
            f"median {ms(median(in_kernel))}, p95 {ms(p95(in_kernel))}",
            runs=f"{kernels} kernels",
        )
    )
    heavy = sorted({m for s in samples for m in s["heavy"]})
    section.notes.append(
        f"Timed inside each process with perf_counter around `ip.run_line_magic('load_ext', ...)` after IPython "
        f"is imported and the shell built; the two extensions alternate, one warm-up process first. "
        f"Ours imports {median([s['modules'] for s in samples]):.0f} new modules while loading "
        f"({'none of requests, Pillow, ipywidgets' if not heavy else 'including ' + ', '.join(heavy)}): "
        "the HTTP client, Pillow and the widgets load on first use."
    )
    section.notes.append(
        "The kernel figure comes from `kernel_figures.load_ext_seconds`: one fresh kernel per sample "
        "(nbclient), timed inside the kernel with perf_counter around `run_line_magic` as well."
    )
    section.notes.append(
        "For reference, from the issue on another machine: jupysql 161 ms, jupyter-ai magics 1,834 ms, "
        "an empty extension 0.5 ms."
    )
    return section
