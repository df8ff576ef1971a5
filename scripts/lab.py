"""`make lab`: JupyterLab on notebooks/, with the session pointed at a local emulator.

The emulator can be told to behave as the live service sometimes does (API.md, "What the live
service may also do"): put its switches in EMULATOR_ARGS, e.g.

    make lab EMULATOR_ARGS="--file-content-type binary/octet-stream --relative-urls"
    make lab EMULATOR_ARGS="--fault download:forbidden:2 --unregistered-polls 3"

(`python -m nanobanana_magic.emulator --help` lists them all). EMULATOR_LATENCY sets the seconds
a task takes (default 5). To use the real API instead: `NANOBANANA_API_KEY=... jupyter lab notebooks`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nanobanana_magic.emulator.__main__ import build_parser, emulator_from_args  # noqa: E402
from nanobanana_magic.notebook.emulator_process import EmulatorProcess  # noqa: E402

#: Switches lab.py sets itself; EMULATOR_ARGS may not override them.
OWN_SWITCHES = ("--port", "--latency", "--parent-pid")


def emulator_switches(text: str) -> list[str]:
    """EMULATOR_ARGS split as a shell would, checked by the emulator's own parser (exits with its usage)."""
    switches = shlex.split(text)
    taken = [s for s in switches if s.split("=")[0] in OWN_SWITCHES]
    if taken:
        raise SystemExit(f"EMULATOR_ARGS may not set {', '.join(taken)}; use EMULATOR_LATENCY for the latency")
    parser = build_parser()
    try:  # a typo stops here with the emulator's own message, not as "the emulator did not start"
        emulator_from_args(parser.parse_args(switches))
    except ValueError as error:
        parser.error(str(error))
    return switches


def main() -> int:
    switches = emulator_switches(os.environ.get("EMULATOR_ARGS", ""))
    latency = float(os.environ.get("EMULATOR_LATENCY", "5"))
    emulator = EmulatorProcess.start(latency=latency, extra_args=switches)
    env = dict(os.environ, NANOBANANA_BASE_URL=emulator.url, NANOBANANA_API_KEY="emulator-local-key")
    shown = f" with {shlex.join(switches)}" if switches else ""
    print(f"emulator at {emulator.url}{shown}; notebooks talk to it (NANOBANANA_BASE_URL is set for the kernels).")
    print("For the real API: stop this, then `export NANOBANANA_API_KEY=...` and `jupyter lab notebooks`.")
    try:
        command = [sys.executable, "-m", "jupyterlab", "--notebook-dir", str(ROOT / "notebooks"), *sys.argv[1:]]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")  # containers and CI machines often run as root; Lab refuses otherwise
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0
    finally:
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
