"""The control panel in a real JupyterLab, driven by headless Chromium (see shared/spec/BROWSER-TESTS.md).

Saves a screenshot of the panel in the test's tmp dir; with NANOBANANA_UPDATE_SCREENSHOTS=1 it
refreshes docs/panel.png, the README's screenshot. On failure the page screenshot and the
server log are kept under the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "panel.png"
TIMEOUT_MS = 60_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Lab:
    """A JupyterLab server on loopback, isolated from the user's settings, with a token."""

    def __init__(self, base: Path) -> None:
        self.root, self.log_path = base / "root", base / "server.log"
        self.token, self.port = secrets.token_hex(16), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = base / "lab-settings"
        notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        for path in (self.root, notification.parent):
            path.mkdir(parents=True, exist_ok=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOBANANA_", "JUPYTER"))}
        env.update(HOME=str(base / "home"), JUPYTER_CONFIG_DIR=str(base / "config"),
                   JUPYTER_DATA_DIR=str(base / "data"), JUPYTER_RUNTIME_DIR=str(base / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"))
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
                   f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                   "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
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
            raise AssertionError(f"JupyterLab exited with {self.process.returncode}; see {self.log_path}")
        raise AssertionError(f"JupyterLab did not answer within {timeout:g} s; see {self.log_path}")

    def stop(self) -> None:
        import requests

        try:
            requests.post(f"{self.url}/api/shutdown", headers={"Authorization": f"token {self.token}"}, timeout=5)
            self.process.wait(15)
        except (requests.RequestException, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(5)
        self._log.close()


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does) to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")
    server = Lab(tmp_path_factory.mktemp("lab"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator_for_lab():
    from nanobanana_magic.emulator import Emulator

    with Emulator(latency=1.0, api_key="sk-browser-" + secrets.token_hex(12)) as emu:
        yield emu


def write_notebook(path: Path, emulator) -> None:
    import nbformat

    setup = "\n".join([
        "%load_ext nanobanana_magic",
        f"%config NanoBananaMagics.base_url = '{emulator.base_url}'",
        f"%config NanoBananaMagics.api_key = '{emulator.api_key}'",
        "%config NanoBananaMagics.poll_schedule = [[1e9, 0.2]]",
    ])
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(setup),
                                               nbformat.v4.new_code_cell("%nanobanana panel")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(notebook, path)


def test_panel_generates_images_in_jupyterlab(lab, emulator_for_lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    name = f"panel-{secrets.token_hex(4)}.ipynb"  # a fresh notebook per test
    write_notebook(lab.root / name, emulator_for_lab)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            drive_the_panel(page, expect, f"{lab.url}/lab/tree/{name}?token={lab.token}", emulator_for_lab)
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            shutil.copy(lab.log_path, tmp_path / "server.log")
            print(f"browser test failed: screenshot and server log in {tmp_path}")
            raise
        finally:
            browser.close()


def drive_the_panel(page, expect, url: str, emulator) -> None:
    page.goto(url)
    expect(page.locator(".jp-StatusBar-TextItem", has_text="(ipykernel) | Idle")).to_be_visible()
    page.keyboard.press("Control+b")  # hide the file browser: more room for the panel
    cells = page.locator(".jp-Notebook .jp-Cell .cm-content")
    for index in (0, 1):
        cells.nth(index).click()
        page.keyboard.press("Shift+Enter")
    panel = page.locator(".jp-OutputArea-output .nanobanana-panel")
    expect(panel).to_be_visible()

    panel.locator(".widget-dropdown select").first.select_option("16:9")
    panel.locator(".nanobanana-images .widget-button", has_text="Add reference image").click()
    reference = panel.locator(".nanobanana-images input").first
    reference.fill(emulator.sample_url("banana"))
    reference.press("Enter")
    expect(panel.locator(".nanobanana-images img")).to_be_visible()  # the thumbnail: the kernel could load it
    prompt = panel.locator(".widget-textarea textarea").first
    generate = panel.locator(".nanobanana-generate")
    gallery_images = panel.locator(".nanobanana-gallery img")
    for count, text in enumerate(["a banana-shaped lighthouse on a cliff at dusk, watercolour",
                                  "a cozy reading nook made of banana leaves, soft morning light"], start=1):
        prompt.fill(text)
        expect(generate).to_be_enabled()
        generate.click()
        expect(gallery_images).to_have_count(count)
    expect(panel.locator(".nanobanana-status")).to_contain_text("✓ 2 done")
    assert emulator.submit_count == 2
    panel.locator(".nanobanana-gallery .widget-button").first.click()
    expect(panel.locator(".nanobanana-preview img")).to_be_visible()
    panel.locator(".nanobanana-preview .widget-button", has_text="Close").click()
    panel.evaluate("el => el.scrollIntoView({block: 'start'})")
    page.locator(".jp-NotebookPanel .jp-WindowedPanel-outer").evaluate("el => el.scrollBy(0, -12)")
    page.screenshot(path=str(tmp_path / "panel.png"))
    if os.environ.get("NANOBANANA_UPDATE_SCREENSHOTS") == "1":  # a test run must not dirty the work tree
        page.screenshot(path=str(SCREENSHOT))
