"""Run the bundled emulator as a child process (for `%nanobanana emulator start` and `make demo`)."""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys
import threading
from collections.abc import Sequence

_LISTENING = re.compile(r"listening on (http://\S+)")


class EmulatorProcess:
    """`python -m nanobanana_magic.emulator` in the background; `url` is where it listens."""

    def __init__(self, process: subprocess.Popen, url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    def start(
        cls, port: int = 0, latency: float = 3.0, extra_args: Sequence[str] = (), timeout: float = 20.0
    ) -> EmulatorProcess:
        command = [
            sys.executable,
            "-m",
            "nanobanana_magic.emulator",
            "--port",
            str(port),
            "--latency",
            str(latency),
            "--parent-pid",
            str(os.getpid()),
            *extra_args,
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, bufsize=1
        )
        found: list[str] = []
        ready = threading.Event()

        def read() -> None:  # keep draining stdout so the child never blocks on a full pipe
            for line in process.stdout:  # type: ignore[union-attr]
                match = _LISTENING.search(line)
                if match and not found:
                    found.append(match.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, name="nanobanana-emulator-output", daemon=True).start()
        if not ready.wait(timeout) or not found:
            process.kill()
            raise RuntimeError("the emulator did not start (see python -m nanobanana_magic.emulator --help)")
        emulator = cls(process, found[0])
        atexit.register(emulator.stop)  # a kernel that exits takes its emulator with it
        return emulator

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
