"""The emulator in its own process, with its clock and counters readable from the benchmark.

The emulator must not share a GIL with what is measured (a kernel, or the benchmark process
timing a kernel's replies), yet the figures need its per-task facts: when a task was created,
when it ended, which status requests it got and when. `EmulatorHost` runs `Emulator` in a child
process (this file as a script) and asks it for those over a JSON-lines pipe.

`shared_render=True` draws one image per (resolution, format, aspect ratio) and serves it for
every task: the real API serves finished files from a CDN, at no CPU cost to this machine,
whereas the emulator draws each result on download (about 1 s of CPU per 4K PNG here).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class EmulatorHost:
    """A child process serving the emulator; `url`, `latency`, `tasks()`, `stop()`."""

    def __init__(
        self,
        *,
        latency: float,
        api_key: str,
        shared_render: bool = False,
        durations: str = "fixed",
        median: float | None = None,
        sigma: float | None = None,
        seed: int = 1234,
    ) -> None:
        command = [sys.executable, __file__, "--latency", str(latency), "--api-key", api_key]
        if shared_render:
            command.append("--shared-render")
        command += ["--durations", durations, "--seed", str(seed)]
        if median is not None:
            command += ["--median", str(median)]
        if sigma is not None:
            command += ["--sigma", str(sigma)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, cwd=ROOT
        )
        self._lock = threading.Lock()  # one request/answer exchange on the pipe at a time
        ready = self.process.stdout.readline()  # type: ignore[union-attr]
        if not ready.startswith("http://"):
            self.process.kill()
            raise RuntimeError(f"the emulator host did not start: {ready!r}")
        self.url = ready.strip()

    def call(self, op: str, **args: Any) -> Any:
        """Run one operation in the child; returns its JSON answer."""
        with self._lock:
            self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
            answer = json.loads(self.process.stdout.readline())  # type: ignore[union-attr]
        if "error" in answer:
            raise RuntimeError(f"emulator host: {answer['error']}")
        return answer["result"]

    def set_latency(self, seconds: float) -> None:
        """Latency of the tasks submitted from now on."""
        self.call("latency", seconds=seconds)

    def set_rate_limit(self, per_second: int | None) -> None:
        """API requests admitted per sliding second from now on (None: no limit); more get 429."""
        self.call("rate_limit", per_second=per_second)

    def stats(self) -> dict[str, Any]:
        """The emulator's counters (`Emulator.stats`) since start or the last reset."""
        return self.call("stats")

    def draw_durations(self, drawn: bool) -> None:
        """True: tasks from now on get durations from the --durations model; False: `latency`."""
        self.call("durations", drawn=drawn)

    def reset(self) -> None:
        """Forget tasks, requests and counters; restart the duration draws from their seed."""
        self.call("reset")

    def tasks(self) -> dict[str, dict[str, Any]]:
        """Per task: created, done_at (time.time()), polls (times of its status requests), downloads."""
        return self.call("tasks")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __enter__(self) -> EmulatorHost:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


# -- the child process -------------------------------------------------------------


def _task_facts(emulator: Any) -> dict[str, dict[str, Any]]:
    facts = {
        task_id: {"created": task.created, "done_at": task.done_at, "polls": [], "downloads": []}
        for task_id, task in emulator.tasks.items()
    }
    for record in emulator.requests:
        if record.phase == "poll" and record.query.get("taskId") in facts:
            facts[record.query["taskId"]]["polls"].append(record.time)
        elif record.phase == "download":
            task_id = record.path.rsplit("/", 1)[-1].split(".")[0]
            if task_id in facts:
                facts[task_id]["downloads"].append(record.time)
    return facts


def _share_renders(emulator: Any) -> None:
    from nanobanana_magic.emulator import images

    service = emulator._service  # the bench host reaches in; tests and the package never do
    drawn: dict[tuple, bytes] = {}
    lock = threading.Lock()

    def render(task: Any) -> bytes:
        p = task.params
        key = (p.resolution, p.output_format, p.aspect_ratio)
        with lock:
            if key not in drawn:
                drawn[key] = images.render_result(
                    images.RenderSpec(
                        "shared", "one picture served for every task", p.aspect_ratio, p.resolution, p.output_format
                    )
                )
            return drawn[key]

    service.render = render


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from nanobanana_magic.emulator import Emulator

    parser = argparse.ArgumentParser(description="emulator child process for the benchmarks")
    parser.add_argument("--latency", type=float, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--shared-render", action="store_true")
    parser.add_argument("--durations", default="fixed")
    parser.add_argument("--median", type=float)
    parser.add_argument("--sigma", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    medians = {res: args.median for res in ("1K", "2K", "4K")} if args.median else None
    emulator = Emulator(
        latency=args.latency,
        api_key=args.api_key,
        credits=10**9,
        durations=args.durations,
        medians=medians,
        sigma=args.sigma,
        duration_seed=args.seed,
    ).start()
    model = emulator.durations  # kept while a warm-up switches it off
    if args.shared_render:
        _share_renders(emulator)
    print(emulator.base_url, flush=True)
    operations = {
        "latency": lambda seconds: setattr(emulator, "latency", seconds),
        "tasks": lambda: _task_facts(emulator),
        "reset": lambda: emulator.reset(),
        "rate_limit": lambda per_second: setattr(emulator, "rate_limit", per_second),
        "stats": lambda: dataclasses.asdict(emulator.stats),
        "durations": lambda drawn: setattr(emulator._service.store, "durations", model if drawn else None),
    }
    try:
        for line in sys.stdin:
            request = json.loads(line)
            try:
                result = operations[request.pop("op")](**request)
                print(json.dumps({"result": result}), flush=True)
            except Exception as exc:  # report to the parent, keep serving
                print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
