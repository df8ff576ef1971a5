"""Shared fixtures: a live emulator per test session, clients and IPython shells pointed at it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import S3Server, running_s3_server, serving_folder

from nanobanana_magic.emulator import Emulator

# A unique random key per run: security tests search every output for it.
API_KEY = "sk-test-" + secrets.token_hex(16)
FAST_SCHEDULE = [[1e9, 0.1]]


@pytest.fixture(scope="session")
def emulator_server():
    with Emulator(latency=0.1, api_key=API_KEY, credits=10**9) as emu:
        yield emu


@pytest.fixture
def emulator(emulator_server):
    """The session's emulator with faults, counters and settings reset for this test."""
    emulator_server.reset()
    emulator_server.credits = 10**9
    yield emulator_server
    emulator_server.reset()


@pytest.fixture
def client(emulator):
    from nanobanana_magic import NanoBananaClient

    c = NanoBananaClient(api_key=API_KEY, base_url=emulator.base_url, backoff=0.01, backoff_max=0.05, read_timeout=2.0)
    yield c
    c.close()


@pytest.fixture
def shell(emulator, tmp_path, monkeypatch):
    """A real (terminal) IPython shell with the extension loaded and pointed at the emulator."""
    from IPython.core.interactiveshell import InteractiveShell

    for name in ("NANOBANANA_API_KEY", "NANOBANANA_BASE_URL", "NANOBANANA_OUTPUT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nanobanana_magic")
    magics = ip.magics_manager.registry["NanoBananaMagics"]
    magics.api_key = API_KEY
    magics.base_url = emulator.base_url
    magics.output_dir = str(tmp_path / "out")
    magics.poll_schedule = FAST_SCHEDULE
    magics.retry_backoff = 0.01
    yield ip
    ip.run_line_magic("unload_ext", "nanobanana_magic")
    ip.user_ns.clear()
    InteractiveShell.clear_instance()


@pytest.fixture
def kernel_env(emulator, tmp_path):
    """Environment for a real kernel run through nbclient, pointed at the emulator."""
    env = dict(os.environ)
    env.update(
        NANOBANANA_API_KEY=API_KEY, NANOBANANA_BASE_URL=emulator.base_url, NANOBANANA_OUTPUT_DIR=str(tmp_path / "out")
    )
    return env


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the session's S3 server."""
    return s3_server.new_bucket()


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(a folder, the http:// URL that serves it)."""
    folder = tmp_path / "www"
    folder.mkdir()
    with serving_folder(folder) as base_url:
        yield folder, base_url


def shown_as(image) -> str:
    """The widget's format, checked against its bytes (a small PNG is its own preview, the rest JPEG)."""
    data = bytes(image.value)
    assert image.format == ("png" if data.startswith(b"\x89PNG") else "jpeg") and data[:2] in (b"\x89P", b"\xff\xd8")
    return image.format


def most_in_any_window(times: list[float], seconds: float = 1.0) -> int:
    """The most times that any half-open window [a, a + seconds) holds (the worst one begins at a time)."""
    times = sorted(times)
    worst, j = 0, 0
    for i, first in enumerate(times):
        while j < len(times) and times[j] < first + seconds:
            j += 1
        worst = max(worst, j - i)
    return worst
