"""The scale benchmark's control run: the same burst in a plain Python process, without a display.

A `Session` (no kernel, no cell outputs, hence no previews) submits `count` tasks to the emulator
and waits for them; the figures are read from the emulator's request log as in scale.py. Run as
a child process (`--child`) so that nothing of the benchmark shares its GIL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from emulator_host import EmulatorHost

ROOT = Path(__file__).resolve().parents[1]


def child(base_url: str, key: str, output_dir: str, count: int, rate: float) -> dict:
    sys.path.insert(0, str(ROOT))
    from nanobanana_magic.core.params import GenerationRequest
    from nanobanana_magic.core.secret import as_key
    from nanobanana_magic.session.session import Session
    from nanobanana_magic.session.settings import Settings

    session = Session(
        Settings(api_key=as_key(key), base_url=base_url, output_dir=output_dir, max_requests_per_second=rate)
    )
    seen: dict[str, float] = {}
    generations = []
    cpu = time.process_time()
    for i in range(count):
        generation = session.submit(GenerationRequest(prompt=f"plain process {rate:g}/s {i}"))  # never cached
        generation.add_listener(lambda g: seen.setdefault(g.task_id, time.time()) if g.done else None)
        generations.append(generation)
    for generation in generations:
        generation.join()
    session.close()
    return {
        "ids": [g.task_id for g in generations],
        "shown": seen,
        "failed": sum(g.status != "succeeded" for g in generations),
        "cpu": time.process_time() - cpu,
    }


def run(emulator: EmulatorHost, key: str, output_dir: Path, count: int, rate: float) -> dict:
    """Figures of one plain-process run: polls per task, detection lag, peak, CPU per task."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", emulator.url, key, str(output_dir), str(count), str(rate)],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    facts, stats = emulator.tasks(), emulator.stats()
    detect, lags = [], []
    for task_id in result["ids"]:
        fact = facts[task_id]
        # The last status request is the one that saw the end (polling stops there); the emulator stamps
        # a request as it arrives and may answer it a hair after the task's end, hence the fallback.
        seen = min((p for p in fact["polls"] if p >= fact["done_at"]), default=max(fact["polls"]))
        detect.append(max(seen - fact["done_at"], 0.0))
        lags.append(result["shown"][task_id] - fact["done_at"])
    return {
        "polls_per_task": statistics.fmean(len(facts[t]["polls"]) for t in result["ids"]),
        "peak_rps": stats["peak_requests_per_second"],
        "answered_429": stats["answered_429"],
        "detect": detect,
        "lags": lags,
        "cpu_per_task": result["cpu"] / count,
        "failed": result["failed"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="child process of the plain-process scale run")
    parser.add_argument("--child", nargs=5, metavar=("BASE_URL", "KEY", "OUTPUT_DIR", "COUNT", "RATE"), required=True)
    args = parser.parse_args()
    base_url, key, output_dir, count, rate = args.child
    print(json.dumps(child(base_url, key, output_dir, int(count), float(rate))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
