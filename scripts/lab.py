"""`make lab`: JupyterLab on notebooks/, with the session pointed at a local emulator.

To use the real API instead: `NANOBANANA_API_KEY=... jupyter lab notebooks` (no emulator).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nanobanana_magic.notebook.emulator_process import EmulatorProcess  # noqa: E402


def main() -> int:
    emulator = EmulatorProcess.start(latency=float(os.environ.get("EMULATOR_LATENCY", "5")))
    env = dict(os.environ, NANOBANANA_BASE_URL=emulator.url, NANOBANANA_API_KEY="emulator-local-key")
    print(f"emulator at {emulator.url}; notebooks talk to it (NANOBANANA_BASE_URL is set for the kernels).")
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
