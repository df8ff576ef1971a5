"""Figures measured in real Jupyter kernels (nbclient) against the bundled emulator.

- `%load_ext nanobanana_magic` time in a fresh kernel (median of several kernels),
- how long a `%%nanobanana --no-wait` cell holds the kernel (median over several cells),
- the notebook size one 4K image adds (the executed notebook with one `-r 4K` cell minus without).

Times are measured inside the kernel with time.perf_counter(). Usage:
    python benchmarks/kernel_figures.py [--kernels 5] [--cells 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from kernel_helpers import SETUP, execute_notebook, kernel_environment, live_kernel, new_notebook, plain_text  # noqa: E402

from nanobanana_magic.notebook.emulator_process import EmulatorProcess  # noqa: E402

KEY = "emulator-benchmark-key"  # the emulator's own key: not a secret

TIMED_LOAD = """\
import time
started = time.perf_counter()
get_ipython().run_line_magic("load_ext", "nanobanana_magic")
print(f"{time.perf_counter() - started:.6f}")
"""

TIMED_NO_WAIT = """\
started = time.perf_counter()
get_ipython().run_cell_magic("nanobanana", "--no-wait", "benchmark banana number {n}")
print(f"{{time.perf_counter() - started:.6f}}")
"""


def load_ext_seconds(env: dict[str, str], cwd: Path, kernels: int) -> list[float]:
    """`%load_ext` time, one fresh kernel each."""
    times = []
    for _ in range(kernels):
        executed = execute_notebook(new_notebook(TIMED_LOAD), cwd, env)
        times.append(float(plain_text(executed.cells[0])))
    return times


def no_wait_hold_seconds(env: dict[str, str], cwd: Path, cells: int) -> list[float]:
    """Time inside `run_cell_magic` of `--no-wait` cells, one kernel, first cell included."""
    times = []
    with live_kernel(cwd, env) as kernel:
        kernel.run(SETUP + "\nimport time")
        for n in range(cells):
            times.append(float(plain_text(kernel.run(TIMED_NO_WAIT.format(n=n))).split()[-1]))
        kernel.run("%nanobanana wait")
    return times


def notebook_bytes_per_image(env: dict[str, str], cwd: Path, resolution: str) -> tuple[int, int]:
    """(bytes the executed notebook grows by with one image cell, bytes of the saved file)."""
    without = execute_notebook(new_notebook(SETUP), cwd, env)
    cell = f"%%nanobanana -r {resolution} -a 16:9 --force\na benchmark landscape at {resolution}"
    with_image = execute_notebook(new_notebook(SETUP, cell), cwd, env)
    grown = len(nbformat.writes(with_image).encode()) - len(nbformat.writes(without).encode())
    path = with_image.cells[1].outputs[0].metadata["application/vnd.nanobanana.task+json"]["path"]
    return grown, Path(path).stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", type=int, default=5, help="fresh kernels for the %%load_ext figure")
    parser.add_argument("--cells", type=int, default=10, help="--no-wait cells for the hold figure")
    parser.add_argument("--latency", type=float, default=0.3, help="emulator seconds per task")
    args = parser.parse_args(argv)

    emulator = EmulatorProcess.start(latency=args.latency, extra_args=["--api-key", KEY])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            env = kernel_environment(emulator.url, cwd / "out", KEY)
            loads = load_ext_seconds(env, cwd, args.kernels)
            holds = no_wait_hold_seconds(env, cwd, args.cells)
            sizes = {res: notebook_bytes_per_image(env, cwd, res) for res in ("1K", "4K")}
    finally:
        emulator.stop()

    ms = lambda seconds: f"{seconds * 1000:.1f} ms"
    print(
        f"%load_ext nanobanana_magic, fresh kernel: median {ms(statistics.median(loads))} "
        f"over {len(loads)} kernels ({', '.join(ms(t) for t in loads)})"
    )
    print(
        f"%%nanobanana --no-wait holds the kernel: median {ms(statistics.median(holds))} over {len(holds)} "
        f"cells (first cell {ms(holds[0])}, later cells {ms(min(holds[1:]))}-{ms(max(holds[1:]))})"
    )
    for res, (grown, file_size) in sizes.items():
        print(
            f"notebook size added by one {res} image: {grown / 1024:.0f} KiB "
            f"(the saved {res} file: {file_size / 1024:.0f} KiB, not embedded)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
