"""`make bench`: every benchmark against the emulator; writes benchmarks/RESULTS.md.

    python benchmarks/run.py            # the full run (a few minutes on 2 cores)
    python benchmarks/run.py --quick    # small counts, for working on the benchmarks themselves
    python benchmarks/run.py --only load_ext,memory

Modules: load_ext.py (fresh IPython processes), kernel_bench.py (kernel hold, lag, 50
concurrent tasks, in one jupyter_client kernel), notebook_size.py (nbclient, with
kernel_figures.py as a cross-check), memory.py (fresh processes with a Session),
result_cpu.py (the CPU of one finished result, before and after, in fresh processes),
scale.py (50, 200 and 1,000 tasks in one kernel, before and after the request budget and
the learned schedule). The emulator always runs in a child process (emulator_host.py), never
inside what is measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT), str(ROOT / "tests")]

import kernel_bench  # noqa: E402
import load_ext  # noqa: E402
import memory  # noqa: E402
import notebook_size  # noqa: E402
import result_cpu  # noqa: E402
import scale  # noqa: E402
from report import Section, load_average, machine, reference_cpu_ms, render  # noqa: E402

FULL = {"load_ext": 9, "kernels": 5, "hold": 20, "lag": 10, "concurrent": 5, "notebook": 5, "memory": 5, "results": 20}
QUICK = {"load_ext": 3, "kernels": 1, "hold": 5, "lag": 3, "concurrent": 1, "notebook": 2, "memory": 1, "results": 5}
SCALE_SIZES = {"full": (50, 200, 1000), "quick": (50,)}
BENCHMARKS = ("load_ext", "kernel", "notebook", "memory", "results", "scale")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts (the figures are then not reportable)")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}"
    )
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md", help="where to write the results")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    chosen = [name for name in args.only.split(",") if name]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    with tempfile.TemporaryDirectory(prefix="bench-pycache-") as pycache:
        _cache_bytecode(pycache)
        return _run(args, chosen, counts)


def _cache_bytecode(folder: str) -> None:
    """Let every child process keep compiled bytecode in `folder`, as an installed package has it.

    With PYTHONDONTWRITEBYTECODE set (as on the development machine) each fresh process would
    compile the package from source again, which is not what a user's `%load_ext` costs.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = folder


def _run(args: argparse.Namespace, chosen: list[str], counts: dict[str, int]) -> int:
    started = time.monotonic()
    load_before = load_average()
    speed_before = reference_cpu_ms()
    sections: list[Section] = []
    steps = {
        "load_ext": lambda: [load_ext.run(counts["load_ext"], counts["kernels"])],
        "kernel": lambda: kernel_bench.run(counts["hold"], counts["lag"], counts["concurrent"]),
        "notebook": lambda: [notebook_size.run(counts["notebook"])],
        "memory": lambda: [memory.run(counts["memory"])],
        "results": lambda: [result_cpu.run(counts["results"])],
        "scale": lambda: [
            scale.run(SCALE_SIZES["quick" if args.quick else "full"], jpeg_size=None if args.quick else 1000)
        ],
    }
    for name in BENCHMARKS:
        if name not in chosen:
            continue
        print(f"{name} ...", flush=True)
        step_started = time.monotonic()
        produced = steps[name]()
        if len(produced) == 1:
            produced[0].seconds = time.monotonic() - step_started
        sections.extend(produced)
        print(f"{name}: {time.monotonic() - step_started:.0f} s", flush=True)

    total = time.monotonic() - started
    info = machine()
    info["load average (1/5/15 min)"] = f"{load_before} at the start, {load_average()} at the end"
    info["machine speed"] = (
        f"{speed_before:.0f} ms at the start, {reference_cpu_ms():.0f} ms at the end: the CPU time of a fixed "
        "workload (`report.reference_cpu_ms`; lower is faster), to compare runs made at different times"
    )
    preamble = [
        "Every figure is measured in this run, against the bundled emulator running in its own process, "
        "with real processes: fresh `python` processes with IPython for `%load_ext`, real ipykernel kernels "
        "(jupyter_client, nbclient) for everything shown in a notebook, fresh processes for memory and for "
        "the CPU of one result. "
        "Medians over the runs given in the last column; p95 interpolated between ranks. Child processes "
        "keep compiled bytecode (a fresh PYTHONPYCACHEPREFIX, filled by warm-up runs), as an installed package has.",
    ]
    if args.quick:
        preamble.append("**Quick run (`--quick`): counts too small to report.**")
    text = render(sections, info, preamble, total)
    args.output.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
