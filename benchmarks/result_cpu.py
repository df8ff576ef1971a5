"""CPU of one finished result: the status answer, download, checks, hashing, save, run log, preview.

Each measurement runs in a fresh process (this file with `--child`) against the emulator in
another process. The child submits tasks that are already done when polled, then drives each
one's `Generation.step()` in its own thread, with the cell's listener (`live.generation_bundle`:
the preview and the bundle a cell shows), and reads `time.thread_time()` around it: the CPU one
finished result costs, end to end, with nothing else running. A second pass under cProfile
says where it goes.

"before" runs the package as it was at `BASE` (extracted with `git archive` into a temporary
directory put first on PYTHONPATH); "after" runs this checkout.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from emulator_host import EmulatorHost
from report import Row, Section, median, ms, p95

ROOT = Path(__file__).resolve().parents[1]
KEY = "emulator-benchmark-key"  # the emulator's own key: not a secret
BASE = "442b5da"  # main before issue 14's cheap results
CASES = (("1K", "png"), ("1K", "jpg"), ("4K", "png"), ("4K", "jpg"))

#: Where the time goes: (label, function names whose cumulative time is that phase).
PHASES = (
    ("status answer (record-info)", ("record_info",)),
    ("download + check", ("download",)),
    ("  of which the check", ("check_image",)),
    ("save (metadata, hash, write)", ("save_image",)),
    ("run log line", ("record_outcome",)),
    ("preview + bundle", ("generation_bundle",)),
    ("  of which decode/resize/encode", ("preview_bytes",)),
    ("sha256 (all calls)", ("openssl_sha256",)),
)


# -- the child process ------------------------------------------------------------


def child(base_url: str, output_dir: str, count: int, resolution: str, fmt: str) -> dict:
    from nanobanana_magic.core.params import GenerationRequest
    from nanobanana_magic.core.schedule import FixedSchedule
    from nanobanana_magic.http.connection import Connection
    from nanobanana_magic.notebook.live import generation_bundle
    from nanobanana_magic.runtime.generation import Generation, TaskRules
    from nanobanana_magic.runtime.store import Store

    connection = Connection(api_key=KEY, base_url=base_url)
    store = Store(output_dir)
    rules = TaskRules(schedule=FixedSchedule([[1e9, 1.0]]))

    def finished(task_ids: list[str]) -> list:
        generations = []
        for task_id, body in task_ids:
            generation = Generation(
                task_id, body, api=connection, sink=store, submitted_at=time.time() - 1, rules=rules
            )
            generation.add_listener(lambda g: generation_bundle(g, 1024, "jpeg") if g.done else None)
            generations.append(generation)
        return generations

    def submit(n: int, tag: str) -> list:
        made = []
        for i in range(n):
            body = GenerationRequest(prompt=f"cpu {tag} {i}", resolution=resolution, output_format=fmt).to_body()
            made.append((connection.submit(body), body))
        time.sleep(0.3)  # the emulator's latency is 0.1 s: every task is done when polled
        return finished(made)

    for generation in submit(3, "warm-up"):  # imports, codecs, the HTTP pool
        generation.step()
    cpu = []
    for generation in submit(count, "timed"):
        started = time.thread_time()
        generation.step()
        cpu.append(time.thread_time() - started)
        if generation.status != "succeeded":
            raise RuntimeError(f"task {generation.task_id} ended {generation.status}: {generation.error}")
    profiled = submit(count, "profiled")
    profile = cProfile.Profile(time.thread_time)  # CPU, not the waits for the emulator
    profile.enable()
    for generation in profiled:
        generation.step()
    profile.disable()
    stats = pstats.Stats(profile)
    total = sum(row[3] for key, row in stats.stats.items() if key[2] == "step")  # type: ignore[attr-defined]
    phases = {}
    for label, names in PHASES:
        cumulative = sum(row[3] for key, row in stats.stats.items() if _named(key[2], names))  # type: ignore[attr-defined]
        phases[label] = cumulative / total if total else 0.0
    size = Path(profiled[0].path).stat().st_size
    import nanobanana_magic

    return {"cpu": cpu, "phases": phases, "file_bytes": size, "package": str(Path(nanobanana_magic.__file__).parent)}


def _named(function: str, names: tuple[str, ...]) -> bool:
    """A profiler's function name is one of `names` (built-ins read "<built-in method _hashlib.openssl_sha256>")."""
    return function in names or any(function.endswith(f".{name}>") for name in names)


# -- the parent -------------------------------------------------------------------


def _old_package(folder: Path) -> Path | None:
    """The package as it was at BASE, extracted under `folder`; None without git or that commit."""
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", BASE, "nanobanana_magic"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _measure(emulator: EmulatorHost, count: int, resolution: str, fmt: str, pythonpath: Path | None) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory(prefix="bench-result-cpu-") as tmp:
        done = subprocess.run(
            [sys.executable, __file__, "--child", emulator.url, tmp, str(count), resolution, fmt],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    if done.returncode != 0:
        raise RuntimeError(f"result_cpu child failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(count: int, cases: tuple[tuple[str, str], ...] = CASES) -> dict[tuple[str, str], dict[str, dict]]:
    """{(resolution, format): {"before": figures, "after": figures}} ("before" absent without git)."""
    results: dict[tuple[str, str], dict[str, dict]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-old-package-") as old,
        EmulatorHost(latency=0.1, api_key=KEY, shared_render=True) as emulator,
    ):
        old_root = _old_package(Path(old))
        for case in cases:
            results[case] = {}
            if old_root is not None:
                results[case]["before"] = _measure(emulator, count, *case, old_root)
                if not results[case]["before"]["package"].startswith(str(old_root)):
                    raise RuntimeError("the 'before' child did not import the old package")
            results[case]["after"] = _measure(emulator, count, *case, None)
    return results


def run(count: int) -> Section:
    section = Section("CPU of one finished result")
    results = measure(count)
    for (resolution, fmt), figures in results.items():
        after = figures["after"]
        before = figures.get("before")
        measured = f"median {ms(median(after['cpu']))}, p95 {ms(p95(after['cpu']))}"
        if before:
            ratio = median(before["cpu"]) / median(after["cpu"])
            measured += (
                f" (before: median {ms(median(before['cpu']))}, p95 {ms(p95(before['cpu']))}; {ratio:.1f}× less)"
            )
        section.rows.append(
            Row(
                f"CPU of one finished result, {resolution} {fmt.upper()} ({after['file_bytes'] / 1024:.0f} KiB file)",
                measured,
                runs=f"{count} results",
            )
        )
        share = ", ".join(f"{label.strip()} {value:.0%}" for label, value in after["phases"].items())
        line = f"{resolution} {fmt}, after: {share}"
        if before:
            line += "; before: " + ", ".join(f"{k.strip()} {v:.0%}" for k, v in before["phases"].items())
        section.notes.append(line)
    section.notes.insert(
        0,
        "Per result, in one thread with nothing else running: `Generation.step()` of a task the emulator has "
        "already finished (status request and its JSON, download, the download check, metadata splice, sha256, "
        "file write, run log line with fsync), then the cell's listener (`live.generation_bundle`: the 1024 px "
        "JPEG preview and the output bundle, without publishing). `time.thread_time()` around it; the emulator "
        f"is another process. 'before' is the package at {BASE} (main before this work), extracted with "
        "`git archive` and run the same way. Shares (cumulative, of `step`) come from a second pass under "
        "cProfile, which inflates small calls; they say where the time goes, the medians say how much.",
    )
    return section


def main() -> int:
    parser = argparse.ArgumentParser(description="child process of the result CPU benchmark")
    parser.add_argument("--child", nargs=5, metavar=("BASE_URL", "OUTPUT_DIR", "COUNT", "RES", "FMT"), required=True)
    args = parser.parse_args()
    base_url, output_dir, count, resolution, fmt = args.child
    print(json.dumps(child(base_url, output_dir, int(count), resolution, fmt)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
