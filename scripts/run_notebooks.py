"""Execute notebooks headless against the bundled emulator; write build/<name>.ipynb and .html.

Each notebook runs in a working directory of its own, build/<name>/, emptied first, so its
`nanobanana_outputs` (images, run log, history) and anything it writes (an export) are its
own: one tutorial's history never shows another's runs.

Used by `make demo`. Usage: python scripts/run_notebooks.py notebooks/quickstart.ipynb [...]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nanobanana_magic.notebook.emulator_process import EmulatorProcess  # noqa: E402

DEMO_KEY = "emulator-demo-key"  # the emulator's own key: not a secret


def workdir(path: Path, build: Path) -> Path:
    """The notebook's own working directory under `build`."""
    return build / path.stem


def execute(path: Path, build: Path, env: dict[str, str], config: list[str] = ()) -> tuple[Path, Path, int]:
    notebook = nbformat.read(path, as_version=4)
    cwd = workdir(path, build)
    shutil.rmtree(cwd, ignore_errors=True)  # a demo starts from scratch
    cwd.mkdir(parents=True)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
        extra_arguments=list(config),  # --NanoBananaMagics.x=... : what ipython_config.py would set
    )
    saved = dict(os.environ)
    # The kernel inherits this environment; datasets (the dataset notebook) keeps its cache in the
    # working directory and never looks for a hub: everything it loads is local.
    os.environ.update(env, HF_HOME=str(cwd / ".hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out_ipynb = build / path.name
    nbformat.write(notebook, out_ipynb)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    out_html = out_ipynb.with_suffix(".html")
    out_html.write_text(html, encoding="utf-8")
    images = len(re.findall(r"data:image/(?:jpeg|png);base64", html))
    return out_ipynb, out_html, images


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class FolderServer:
    """A folder served over HTTP on loopback from a daemon thread (a file:// upload_to's web server)."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="demo-uploads", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--build", type=Path, default=ROOT / "build")
    parser.add_argument("--latency", type=float, default=2.0, help="emulator seconds per task")
    args = parser.parse_args(argv)

    args.build.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.build / "uploads", ignore_errors=True)
    emulator = EmulatorProcess.start(latency=args.latency, extra_args=["--api-key", DEMO_KEY])
    print(f"emulator: {emulator.url}")
    env = {"NANOBANANA_BASE_URL": emulator.url, "NANOBANANA_API_KEY": DEMO_KEY}
    for name in ("NANOBANANA_OUTPUT_DIR", "NANOBANANA_UPLOAD_TO"):
        os.environ.pop(name, None)  # each notebook's outputs stay in its own folder
    # Reference images that are local files go to this folder, served over HTTP for the emulator to
    # fetch: the stand-in for a bucket (editing.ipynb). Its URL is only known once it listens.
    uploads = args.build / "uploads"
    uploads.mkdir(exist_ok=True)
    server = FolderServer(uploads)
    print(f"uploads: {uploads} at {server.url}")
    config = [
        f"--NanoBananaMagics.upload_to={uploads.resolve().as_uri()}",
        f"--NanoBananaMagics.upload_public_url={server.url}",
    ]
    try:
        for path in args.notebooks:
            started = time.monotonic()
            out_ipynb, out_html, images = execute(path, args.build, env, config)
            print(f"{path}: {images} images, {time.monotonic() - started:.1f} s")
            print(f"  notebook: {out_ipynb.relative_to(ROOT) if out_ipynb.is_relative_to(ROOT) else out_ipynb}")
            print(f"  page:     {out_html.relative_to(ROOT) if out_html.is_relative_to(ROOT) else out_html}")
            print(f"  outputs:  {workdir(path, args.build) / 'nanobanana_outputs'}")
    finally:
        emulator.stop()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
