"""Bytes a 4K image adds to the saved notebook: ours against the naive full-file embed.

One notebook is executed headless (nbclient): `n` cells `%%nanobanana -r 4K` (each a distinct
image), then `n` cells showing the same files the naive way,
`IPython.display.Image(data=open(path, 'rb').read())`. A cell's cost is the size of the saved
.ipynb with its outputs minus the size with them cleared.
`kernel_figures.notebook_bytes_per_image` (one 4K cell vs none, two notebooks) cross-checks it.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import nbformat
from emulator_host import EmulatorHost
from kernel_figures import notebook_bytes_per_image
from kernel_helpers import SETUP, execute_notebook, kernel_environment, new_notebook
from report import Row, Section, kib, median

KEY = "emulator-benchmark-key"  # the emulator's own key: not a secret
TARGET = 300 * 1024


def _output_bytes(notebook: nbformat.NotebookNode, index: int) -> int:
    stripped = copy.deepcopy(notebook)
    stripped.cells[index].outputs = []
    stripped.cells[index].execution_count = None
    return len(nbformat.writes(notebook).encode()) - len(nbformat.writes(stripped).encode())


def run(images: int) -> Section:
    section = Section("Notebook bytes per 4K image")
    ours_cells = [f"%%nanobanana -r 4K -a 16:9 -o g{i}\na benchmark landscape, number {i}" for i in range(images)]
    naive_cells = [
        f"from IPython.display import Image\nImage(data=open(g{i}.path, 'rb').read())" for i in range(images)
    ]
    with (
        tempfile.TemporaryDirectory(prefix="bench-notebook-") as tmp,
        EmulatorHost(latency=1.0, api_key=KEY) as emulator,
    ):
        cwd = Path(tmp)
        env = kernel_environment(emulator.url, cwd / "out", KEY)
        notebook = execute_notebook(new_notebook(SETUP, *ours_cells, *naive_cells), cwd, env, timeout=300)
        ours = [_output_bytes(notebook, 1 + i) for i in range(images)]
        naive = [_output_bytes(notebook, 1 + images + i) for i in range(images)]
        files = [p.stat().st_size for p in (cwd / "out").glob("*.png")]
        whole, _ = notebook_bytes_per_image(env, cwd, "4K")
    ratios = [n / o for n, o in zip(naive, ours)]
    ours_median = median(ours)
    section.rows.append(
        Row(
            "notebook bytes added per 4K image (ours)",
            f"median {kib(ours_median)}",
            f"≤ {kib(TARGET)}",
            ours_median <= TARGET,
            f"{kib(TARGET - ours_median)} to spare" if ours_median <= TARGET else f"{kib(ours_median - TARGET)} over",
            f"{images} images",
        )
    )
    section.rows.append(
        Row(
            "naive `Image(data=...)` of the same file, ratio naive / ours",
            f"median {kib(median(naive))}, {median(ratios):.1f}× ours",
            runs=f"{images} images",
        )
    )
    section.notes.append(
        f"Ours embeds one 1024 px JPEG preview (the `preview_max_px` default) inside the HTML output plus a text "
        f"caption and the task metadata; the full file stays on disk. The emulator's 4K PNGs are "
        f"{kib(median(files))} (a smooth gradient compresses well). A photographic 4K PNG is far larger "
        f"(16.8 megapixels, 48 MiB raw, typically compressed about 2×): the naive embed grows with the file "
        f"(base64, 4/3 of it), ours stays the size of the preview, so the real ratio is much larger than here."
    )
    section.notes.append(
        f"Cross-check with `kernel_figures.notebook_bytes_per_image` (whole saved notebook with one "
        f"`-r 4K` cell minus without it, cell source included): {kib(whole)}."
    )
    return section
