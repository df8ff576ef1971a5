"""JupyterLab and Notebook 7 in headless Chromium (see shared/spec/BROWSER-TESTS.md): the control
panel in both, and a `%%nanobanana` cell that shows a live status line, then the image in the same
output (in JupyterLab).

Saves screenshots in the test's tmp dir; with NANOBANANA_UPDATE_SCREENSHOTS=1 it also
refreshes docs/panel.png (the README's) and docs/cell.png. On failure the page
screenshot and the server log are kept under the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parent.parent / "docs"  # the README's screenshots
TIMEOUT_MS = 60_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


APP_ARGS = {  # per `python -m <app>`: JupyterLab, and Notebook 7 (the same server, another frontend)
    "jupyterlab": ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
    "notebook": [],
}


class JupyterServer:
    """A Jupyter server (`app` is jupyterlab or notebook) on loopback, isolated from the user's
    settings, with a token."""

    def __init__(self, base: Path, app: str) -> None:
        self.app = app
        self.root, self.log_path = base / "root", base / "server.log"
        self.token, self.port = secrets.token_hex(16), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = base / "lab-settings"
        notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        for path in (self.root, notification.parent):
            path.mkdir(parents=True, exist_ok=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOBANANA_", "JUPYTER"))}
        env.update(
            HOME=str(base / "home"),
            JUPYTER_CONFIG_DIR=str(base / "config"),
            JUPYTER_DATA_DIR=str(base / "data"),
            JUPYTER_RUNTIME_DIR=str(base / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        )
        command = [
            sys.executable,
            "-m",
            app,
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            *APP_ARGS[app],
        ]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, env=env, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll /api/status until it answers; between polls, wait on the process (it may exit)."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/api/status", params={"token": self.token}, timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            try:
                self.process.wait(0.2)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"{self.app} exited with {self.process.returncode}; see {self.log_path}")
        raise AssertionError(f"{self.app} did not answer within {timeout:g} s; see {self.log_path}")

    def stop(self) -> None:
        import requests

        try:
            requests.post(f"{self.url}/api/shutdown", headers={"Authorization": f"token {self.token}"}, timeout=5)
            self.process.wait(15)
        except (requests.RequestException, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(5)
        self._log.close()


def serve(tmp_path_factory, app: str, minversion: str | None = None) -> Iterator[JupyterServer]:
    """A ready server of `app` for the session; skips when Chromium, playwright or `app` is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does) to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    pytest.importorskip(app, minversion, reason=f"{app} is not installed")
    server = JupyterServer(tmp_path_factory.mktemp(app), app)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    yield from serve(tmp_path_factory, "jupyterlab")


@pytest.fixture(scope="session")
def notebook7(tmp_path_factory):
    """Jupyter Notebook 7: JupyterLab's notebook widgets in a one-document page at /notebooks/<path>."""
    yield from serve(tmp_path_factory, "notebook", minversion="7")


@contextmanager
def lab_emulator(latency: float | None) -> Iterator:
    """An emulator in this process; `latency=None` holds every task until `emu.finish()`."""
    from nanobanana_magic.emulator import Emulator

    with Emulator(latency=latency, api_key="sk-browser-" + secrets.token_hex(12)) as emu:
        yield emu


@pytest.fixture
def emulator_for_lab():
    with lab_emulator(1.0) as emu:
        yield emu


@pytest.fixture
def held_emulator():
    """Tasks stay pending until the test finishes them: the pending phase lasts as long as the test needs."""
    with lab_emulator(None) as emu:
        yield emu


def write_notebook(path: Path, emulator, cells: list[str], poll_interval: float = 0.2) -> None:
    """A notebook whose first cell points the extension at `emulator`, then `cells`."""
    import nbformat

    setup = "\n".join(
        [
            "%load_ext nanobanana_magic",
            f"%config NanoBananaMagics.base_url = '{emulator.base_url}'",
            f"%config NanoBananaMagics.api_key = '{emulator.api_key}'",
            f"%config NanoBananaMagics.poll_schedule = [[1e9, {poll_interval}]]",
        ]
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in [setup, *cells]])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(notebook, path)


def open_in_lab(page, server: JupyterServer, name: str, notebook: str) -> None:
    from playwright.sync_api import expect

    # its own workspace: the default one would reopen the notebooks of earlier tests
    page.goto(f"{server.url}/lab/workspaces/{name}/tree/{notebook}?token={server.token}")
    # Not the toolbar indicator: it reads idle before the kernel exists (BROWSER-TESTS.md).
    expect(page.locator(".jp-StatusBar-TextItem", has_text="(ipykernel) | Idle")).to_be_visible()
    page.keyboard.press("Control+b")  # hide the file browser: more room for the outputs


def open_in_notebook7(page, server: JupyterServer, name: str, notebook: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server.url}/notebooks/{notebook}?token={server.token}")
    # Notebook 7 has no kernel status text: its menu-bar status widget gets the `-fade` class
    # without `-info` only for idle or busy, i.e. once a kernel is connected. Only then does the
    # toolbar indicator tell the truth: like Lab's, it reads idle before any kernel exists.
    connected = ".jp-NotebookKernelStatus.jp-NotebookKernelStatus-fade:not(.jp-NotebookKernelStatus-info)"
    expect(page.locator(connected)).to_be_attached()
    expect(page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')).to_be_visible()


OPEN_NOTEBOOK = {"jupyterlab": open_in_lab, "notebook": open_in_notebook7}


@contextmanager
def notebook_page(
    server: JupyterServer,
    tmp_path: Path,
    name: str,
    emulator,
    cells: list[str],
    *,
    viewport: dict,
    poll_interval: float = 0.2,
) -> Iterator:
    """A fresh notebook open in headless Chromium, its kernel idle (in Lab, the file browser hidden).

    On failure, keeps the page screenshot and the server log in `tmp_path`.
    """
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    notebook = f"{name}.ipynb"  # the tab's title in the screenshots
    assert not (server.root / notebook).exists(), f"{notebook}: each test opens a fresh notebook"
    write_notebook(server.root / notebook, emulator, cells, poll_interval)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=viewport)
        page.set_default_timeout(TIMEOUT_MS)
        try:
            OPEN_NOTEBOOK[server.app](page, server, name, notebook)
            yield page
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            shutil.copy(server.log_path, tmp_path / "server.log")
            print(f"browser test failed: screenshot and server log in {tmp_path}")
            raise
        finally:
            browser.close()


def run_cell(page, index: int) -> None:
    page.locator(".jp-Notebook .jp-Cell .cm-content").nth(index).click()
    page.keyboard.press("Shift+Enter")


def save_screenshot(page, tmp_path: Path, name: str, clip: dict | None = None) -> None:
    """Into the test's tmp dir; also into docs/ with NANOBANANA_UPDATE_SCREENSHOTS=1."""
    page.screenshot(path=str(tmp_path / name), clip=clip)
    if os.environ.get("NANOBANANA_UPDATE_SCREENSHOTS") == "1":  # a test run must not dirty the work tree
        shutil.copy(tmp_path / name, DOCS / name)


def test_panel_generates_images_in_jupyterlab(lab, emulator_for_lab, tmp_path):
    from playwright.sync_api import expect

    with notebook_page(
        lab, tmp_path, "panel", emulator_for_lab, ["%nanobanana panel"], viewport={"width": 1280, "height": 900}
    ) as page:
        panel = drive_the_panel(page, expect, emulator_for_lab)
        panel.evaluate("el => el.scrollIntoView({block: 'start'})")
        page.locator(".jp-NotebookPanel .jp-WindowedPanel-outer").evaluate("el => el.scrollBy(0, -12)")
        save_screenshot(page, tmp_path, "panel.png")


def test_panel_generates_images_in_notebook7(notebook7, emulator_for_lab, tmp_path):
    """The same panel, unchanged, in Jupyter Notebook 7's one-document page."""
    from playwright.sync_api import expect

    with notebook_page(
        notebook7,
        tmp_path,
        "panel-notebook7",
        emulator_for_lab,
        ["%nanobanana panel"],
        viewport={"width": 1280, "height": 900},
    ) as page:
        panel = drive_the_panel(page, expect, emulator_for_lab)
        panel.evaluate("el => el.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(tmp_path / "panel-notebook7.png"))


def drive_the_panel(page, expect, emulator):
    """Run the setup and `%nanobanana panel` cells, then use the panel as a person would: pick a
    ratio, add a reference image, generate twice, open and close a preview. Returns the panel."""
    for index in (0, 1):
        run_cell(page, index)
    panel = page.locator(".jp-OutputArea-output .nanobanana-panel")
    expect(panel).to_be_visible()

    panel.locator(".widget-dropdown select").first.select_option("16:9")
    panel.locator(".nanobanana-images .widget-button", has_text="Add reference image").click()
    reference = panel.locator(".nanobanana-images input[type='text']").first
    reference.fill(emulator.sample_url("banana"))
    reference.press("Enter")
    expect(panel.locator(".nanobanana-images img")).to_be_visible()  # the thumbnail: the kernel could load it
    prompt = panel.locator(".widget-textarea textarea").first
    generate = panel.locator(".nanobanana-generate")
    gallery_images = panel.locator(".nanobanana-gallery img")
    for count, text in enumerate(
        [
            "a banana-shaped lighthouse on a cliff at dusk, watercolour",
            "a cozy reading nook made of banana leaves, soft morning light",
        ],
        start=1,
    ):
        prompt.fill(text)
        expect(generate).to_be_enabled()
        generate.click()
        expect(gallery_images).to_have_count(count)
    expect(panel.locator(".nanobanana-status")).to_contain_text("✓ 2 done")
    assert emulator.submit_count == 2
    panel.locator(".nanobanana-gallery .widget-button").first.click()
    expect(panel.locator(".nanobanana-preview img")).to_be_visible()
    panel.locator(".nanobanana-preview .widget-button", has_text="Close").click()
    return panel


GENERATE_CELL = "%%nanobanana -a 16:9 -o g\na watercolour map of Lisbon at dusk"
STATUS_LINE = re.compile(r"nanobanana · generating · (\d+\.\d) s · ")


def test_cell_shows_live_status_then_the_image_in_place(lab, held_emulator, tmp_path):
    """In JupyterLab `wait="auto"` means background: the cell returns, its output ticks, the
    kernel runs other cells, and the image later replaces the status line in that same output."""
    from playwright.sync_api import expect

    emu = held_emulator
    cells = [GENERATE_CELL, "1 + 1", "%%nanobanana -a 7:3\nx"]
    with notebook_page(
        lab, tmp_path, "lisbon", emu, cells, viewport={"width": 1100, "height": 840}, poll_interval=0.25
    ) as page:
        notebook_cells = page.locator(".jp-Notebook .jp-Cell")
        generating, second, failing = (notebook_cells.nth(i) for i in (1, 2, 3))
        outputs = generating.locator(".jp-OutputArea-child")
        run_cell(page, 0)
        expect(notebook_cells.nth(0).locator(".jp-InputArea-prompt")).to_have_text("[1]:")
        run_cell(page, 1)

        # (1) the cell returned while its task is pending (held by the emulator until finish())
        status = generating.locator(".jp-OutputArea-output")
        expect(status).to_contain_text("nanobanana · generating")
        expect(generating.locator(".jp-InputArea-prompt")).to_have_text("[2]:")
        expect(page.locator(".jp-StatusBar-TextItem", has_text="(ipykernel) | Idle")).to_be_visible()
        assert len(emu.tasks) == 1
        [task_id] = emu.tasks

        # (2) the status line ticks: its elapsed seconds change
        first = status.inner_text()
        expect(status).not_to_have_text(first)
        later = status.inner_text()
        assert float(STATUS_LINE.search(later)[1]) > float(STATUS_LINE.search(first)[1]), (first, later)
        assert task_id[:12] in later and "16:9" in later

        # (3) the kernel is free: another cell runs while the task is still pending
        run_cell(page, 2)
        second_output = second.locator(".jp-OutputArea-output")
        expect(second_output).to_have_text("2")
        expect(status).to_contain_text("nanobanana · generating")
        # and it keeps ticking for as long as the task runs (here ~3 s, a short real task)
        expect(status).to_have_text(re.compile(r"generating · ([3-9]|\d\d+)\.\d s"))

        # (4) the task ends: the first cell's one output becomes the preview and caption
        assert emu.finish(task_id)
        expect(generating.locator(".jp-OutputArea-output img")).to_be_visible()
        expect(outputs).to_have_count(1)
        expect(status).to_contain_text(f"task {task_id} · nanobanana_outputs/")
        expect(status).not_to_contain_text("generating")
        expect(second.locator(".jp-OutputArea-output")).to_have_count(1)
        expect(second_output).to_have_text("2")
        assert list((lab.root / "nanobanana_outputs").glob(f"*{task_id[:8]}*"))

        # (5) a bad request fails the cell with one line, no traceback
        run_cell(page, 3)
        error = failing.locator(".jp-OutputArea-output")
        expect(error).to_have_text(
            re.compile(r"^InvalidRequestError: aspect ratio '7:3' is not supported; use one of [0-9: ]+ auto\s*$")
        )
        assert "\n" not in error.inner_text().strip()
        expect(error).not_to_contain_text("Traceback")
        expect(failing.locator(".jp-OutputArea-child")).to_have_count(1)

        expect(page.locator(".jp-StatusBar-TextItem", has_text="(ipykernel) | Idle")).to_be_visible()
        save_cell_screenshot(page, tmp_path, generating, second)


def save_cell_screenshot(page, tmp_path: Path, first, last) -> None:
    """The app's top bars, then the cells from `first` to `last`, cropped below `last`."""
    first.evaluate("el => el.scrollIntoView({block: 'start'})")
    cells = last.bounding_box()
    status_bar = page.locator("#jp-main-statusbar").bounding_box()
    clip = {
        "x": 0,
        "y": 0,
        "width": page.viewport_size["width"],
        "height": min(status_bar["y"], cells["y"] + cells["height"] + 6),
    }
    save_screenshot(page, tmp_path, "cell.png", clip)
