#!/usr/bin/env bash
# The unit, IPython and kernel tests on the oldest versions pyproject.toml allows.
#
# Makes .venv-oldest afresh, installs the project with `.[test]` under the pins of
# .ci/oldest-constraints.txt (one per floor, checked against pyproject.toml), and runs the
# tests that need no browser. Arguments go to pytest. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${OLDEST_VENV:-.venv-oldest}"
CONSTRAINTS=.ci/oldest-constraints.txt
TESTS=(tests/test_params.py tests/test_interpolate.py tests/test_client.py tests/test_store.py
       tests/test_magics.py tests/test_kernels.py tests/test_panel.py tests/test_research.py
       tests/test_security.py)

"$PYTHON" -m venv --clear "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q -e ".[test]" -c "$CONSTRAINTS"
"$PY" -m pip check

# Each floor of the runtime dependencies and the test extra is pinned to exactly that floor.
"$PY" - "$CONSTRAINTS" <<'PYCODE'
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon
from packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10
    sys.exit(print("oldest deps: no tomllib, pins not checked against pyproject.toml"))
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
pins = {}
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, _, pinned = line.partition("==")
        pins[canon(name)] = Version(pinned)
problems = []
floors = {}
for text in project["dependencies"] + project["optional-dependencies"]["test"]:
    req = Requirement(text)
    lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
    if lows:
        floors[canon(req.name)] = lows[0]
for name in sorted(set(floors) | set(pins)):
    if floors.get(name) != pins.get(name):
        problems.append(f"{name}: floor {floors.get(name)} in pyproject.toml, pin {pins.get(name)} in {sys.argv[1]}")
    elif Version(version(name)) != pins[name]:
        problems.append(f"{name}: {version(name)} installed, pinned {pins[name]}")
if problems:
    sys.exit("oldest deps out of step:\n  " + "\n  ".join(problems))
print("oldest deps:", ", ".join(f"{n} {v}" for n, v in sorted(pins.items())))
PYCODE

exec "$PY" -m pytest "${TESTS[@]}" "$@"
