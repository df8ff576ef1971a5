"""Writes notebooks/*.ipynb from the cell lists below (so that the tutorials are reviewed as code).

Run: .venv/bin/python scripts/make_notebooks.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str, *tags: str):
    cell = new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


QUICKSTART = [
    md("""
# nanobanana-magic: quickstart

Generate images with the NanoBanana API ("Nano Banana 2") without leaving the notebook.
You write the prompt as a cell, keep working, and the image replaces the cell's status line
when it is ready. Every image is saved with its parameters, and re-running a cell costs nothing.

**Install**: `pip install nanobanana-magic`.

**Your key** never goes into the notebook. Either set it in the environment before starting
Jupyter (`export NANOBANANA_API_KEY=...`), or type it into a hidden prompt with
`%nanobanana login` (kept for this session only). Without a key, the next cell starts the
bundled emulator, a local stand-in for the API, so this notebook runs anywhere.
"""),
    code("%load_ext nanobanana_magic"),
    code("""
import os

if not os.environ.get("NANOBANANA_API_KEY"):
    %nanobanana emulator start
"""),
    md("""
`%nanobanana config` shows the effective settings (the key masked). Change any of them with
`%config NanoBananaMagics.<name> = ...`, e.g. the default resolution or the output folder.
"""),
    code("%nanobanana config"),
    md("""
## A first image

The cell body is the prompt. `{expression}` takes values from your namespace (use `{{ }}` for
literal braces, or `--raw`). Flags set the parameters; `-o NAME` binds the result.
"""),
    code("""
city = "Lisbon"
"""),
    code("""
%%nanobanana -a 16:9 -r 2K -o lisbon
a watercolour map of {city} at dusk
"""),
    md("""
`lisbon` is a `Generation`: the task id, the exact request sent, the saved file, and the image
as a Pillow object (read from disk when you ask for it).
"""),
    code("""
print(lisbon.task_id, lisbon.status, f"{lisbon.elapsed:.1f} s")
print(lisbon.path)
print(lisbon.request)
lisbon.image.size
"""),
    md("""
## Reference images (image-to-image)

Pass up to 14 image URLs with `-i` (repeatable). With `-a auto` the result takes the first
reference image's aspect ratio. The emulator serves a few sample pictures for this.
"""),
    code("""
import nanobanana_magic

reference = nanobanana_magic.config().base_url + "/samples/banana.png"
"""),
    code("""
%%nanobanana -i {reference} -a auto -f jpg
the same banana as a bronze statue in a museum, soft light
"""),
    md("""
## When things go wrong

Errors are one line: what happened and what to do. Bad input is caught before anything is
sent (and before anything is paid for):
"""),
    code(
        """
%%nanobanana -a 7:3
a square that is not a square
""",
        "raises-exception",
    ),
    md("A task the service refuses (here, a prompt flagged by the content policy) names the API's reason:"),
    code(
        """
%%nanobanana
a forbidden subject
""",
        "raises-exception",
    ),
    md("""
## Check before you pay

`--dry-run` shows the exact JSON body that would be sent, and sends nothing.
"""),
    code("""
%%nanobanana --dry-run -r 4K -g
a weather map of {city} for tomorrow, {{with a legend}}
"""),
    md("""
## Re-runs are free

Running the same request again is answered from the saved file, with no API call; the caption
says "cached". `--force` submits a new task anyway.
"""),
    code("""
%%nanobanana -a 16:9 -r 2K
a watercolour map of {city} at dusk
"""),
    md("""
## History and recovery

Every task goes into `nanobanana_outputs/runs.jsonl` the moment it is submitted, so a paid task
is never lost, even if the kernel dies: `%nanobanana fetch TASK_ID` gets its image later
without submitting again.
"""),
    code("%nanobanana history"),
    code("%nanobanana credits"),
    md("""
## Working in the background

In an interactive notebook the cell returns at once and the image appears when ready; in a
headless run (nbclient, papermill, `nbconvert --execute`) each cell waits, so the saved notebook
holds the images. `--no-wait` / `--wait` override this per cell, and `%nanobanana wait` blocks
until every pending task is done. `%nanobanana help` lists every command and option.
"""),
]


RESEARCH = [
    md("""
# Reproducible research with nanobanana-magic

Researchers rarely make one image. This notebook shows how to make many, from data, and how
to keep a record that a methods section or a data card can cite: every task id, the full request,
the times, the file and its sha256.
"""),
    code("%load_ext nanobanana_magic"),
    code("""
import os

if not os.environ.get("NANOBANANA_API_KEY"):
    %nanobanana emulator start
"""),
    md("""
## Prompts from data

`{expression}` in a cell takes any Python expression from your namespace: names, indexing,
attributes, calls. The prompt actually sent is stored with the image.
"""),
    code("""
specimens = [
    {"name": "axolotl", "habitat": "a misty mountain lake"},
    {"name": "pangolin", "habitat": "a dry savanna at noon"},
]
specimen = specimens[0]
"""),
    code("""
%%nanobanana -a 4:3 -o plate
a natural-history plate of the {specimen['name']} in {specimen['habitat']}, ink and watercolour
"""),
    code("plate.request['prompt']"),
    md("""
## A sweep: every combination, as a labelled grid

`--sweep NAME=V1,V2` varies a parameter (any of the magic's options) or a `{variable}` of the
prompt; `NAME=@list` takes the values from a list. The cartesian product runs as one batch (at
most `--concurrency` tasks at a time) and the grid fills in as tasks finish. First, a dry run:
it lists the requests and, when you tell it your plan's prices, what they cost.
"""),
    code("""
subjects = ["a red fox", "a snowy owl", "a banana"]
%config NanoBananaMagics.credit_costs = {"1K": 4, "2K": 6, "4K": 12}
"""),
    code("""
%%nanobanana --dry-run --sweep aspect_ratio=1:1,16:9 --sweep resolution=1K,2K --sweep subject=@subjects
{subject} in a field guide, flat colours
"""),
    code("""
%%nanobanana --sweep aspect_ratio=1:1,16:9 --sweep resolution=1K,2K --sweep subject=@subjects -o grid
{subject} in a field guide, flat colours
"""),
    code("""
[(g.request["aspectRatio"], g.request["resolution"], g.status) for g in grid[:4]]
"""),
    md("""
## A batch from Python, with a progress bar

`nanobanana_magic.generate_many` takes prompts, dicts of parameters or `GenerationRequest`s,
keeps at most `concurrency` tasks pending, shows one progress bar, and returns the results in
input order. Rate limits slow it down instead of failing it; interrupting stops submitting (what
was submitted stays in the run log and keeps being polled).
"""),
    code("""
import nanobanana_magic
from nanobanana_magic import GenerationRequest

requests = [GenerationRequest(prompt=f"the {s['name']} in {s['habitat']}, botanical style", aspect_ratio="3:2")
            for s in specimens]
requests.append({"prompt": "a banana under a microscope", "resolution": "2K"})
batch = nanobanana_magic.generate_many(requests, concurrency=2)
[(g.task_id[:8], g.status, g.path.name if g.path else None) for g in batch]
"""),
    md("""
## Re-running costs nothing

Each request body is compared (after interpolation) with the run log: an equal one that succeeded
is answered from its saved file, with no API call. Run the batch again:
"""),
    code("""
again = nanobanana_magic.generate_many(requests, concurrency=2)
print(sum(g.cached for g in again), "of", len(again), "answered from the cache")
"""),
    md("""
## Provenance: history, export, verify

`%nanobanana history --format table|json|csv|markdown` shows the run log (newest first);
`%nanobanana export PATH` writes all of it (.json, .jsonl, .csv or .md) and `%nanobanana verify`
re-hashes the saved files to prove they are the ones the run log describes.
"""),
    code("%nanobanana history -n 5 --format markdown"),
    code("%nanobanana export provenance/generations.csv"),
    code("""
import csv

rows = list(csv.DictReader(open("provenance/generations.csv")))
print(len(rows), "generations;", rows[0]["task_id"], rows[0]["sha256"][:16], "…")
"""),
    code("%nanobanana verify"),
    md("""
## Running the whole notebook headless

Headless runs block on each cell (the `wait="auto"` setting), so the saved notebook holds every
image. With papermill:

```bash
NANOBANANA_API_KEY=... papermill reproducible-research.ipynb out.ipynb
```

or with nbclient from Python:

```python
import nbformat
from nbclient import NotebookClient

nb = nbformat.read("reproducible-research.ipynb", as_version=4)
NotebookClient(nb, timeout=600).execute()
nbformat.write(nb, "out.ipynb")
```

`make demo` in the repository does exactly that for every notebook, against the bundled emulator.
"""),
]


PANEL = [
    md("""
# The control panel

For people who would rather click than type: `%nanobanana panel` shows every option of
`%%nanobanana` as a form. Each control is built from the same parameter definition as the
magic's flags, checks its value as you type (with the magic's own messages), and **Generate**
goes through the same session: cache, run log, saved files, background polling.
"""),
    code("%load_ext nanobanana_magic"),
    code("""
import os

if not os.environ.get("NANOBANANA_API_KEY"):
    %nanobanana emulator start
"""),
    md("""
`nanobanana_magic.panel()` returns the panel (so you can keep a reference); `%nanobanana panel`
just shows one. Controls start at your configured defaults: set `%config NanoBananaMagics.aspect_ratio
= "16:9"` first and the panel opens on 16:9.
"""),
    code("""
import nanobanana_magic

%config NanoBananaMagics.aspect_ratio = "16:9"
panel = nanobanana_magic.panel()
panel
"""),
    md("""
Type a prompt, pick options and click **Generate**; the gallery fills in as tasks finish. The
same can be driven from code, which is how this notebook runs headless:
"""),
    code("""
panel.field("prompt").widget.value = "a lighthouse shaped like a banana, on a cliff at dusk, watercolour"
panel.field("resolution").widget.value = "2K"
panel.generate.click()
"""),
    md("""
An invalid value is marked next to its field and **Generate** is disabled until it is fixed:
"""),
    code("""
panel.field("callback_url").widget.value = "ftp://not-http"
print(panel.generate.disabled, "-", panel.generate.tooltip)
panel.field("callback_url").widget.value = ""
"""),
    md("""
## Back to code

**Copy as cell** gives the `%%nanobanana` cell that makes the same request, and `panel.results`
holds the `Generation`s (newest first), so a result found by clicking can be reproduced and cited.
"""),
    code("print(panel.cell_text())"),
    code("""
panel.wait(timeout=120)  # what a script does instead of watching the gallery
result = panel.results[0]
print(result.task_id, result.status, result.path)
result.image.size
"""),
    code("%nanobanana history -n 3"),
]


EDITING = [
    md("""
# Editing with reference images

Nano Banana's strength is editing: change one thing in an image, keep a subject consistent, or
compose up to 14 references. `-i` takes an image URL, a local file (PNG, JPEG or WebP), or `@NAME`:
a result of an earlier cell (a `Generation`), a Pillow image, a `pathlib.Path`, or a list of these.

The API fetches reference images by URL only. A result that finished a few minutes ago is sent as
its result URL; local files, in-memory images and older results are uploaded to **your own
storage** (`upload_to`: an S3 or Google Cloud Storage bucket, or a folder behind a web server),
under the sha256 of their bytes. Nothing goes to an anonymous file host.
"""),
    code("%load_ext nanobanana_magic"),
    code("""
import os

if not os.environ.get("NANOBANANA_API_KEY"):
    %nanobanana emulator start
"""),
    md("""
## Where uploads go

With a bucket of your own you would set, once:

```python
%config NanoBananaMagics.upload_to = "s3://my-bucket/nanobanana-refs"   # or NANOBANANA_UPLOAD_TO
```

(`upload_options` takes fsspec storage options such as an `endpoint_url`; signed URLs valid
`upload_expiry` seconds are sent unless `upload_public_url` names a public prefix;
`pip install "nanobanana-magic[upload]"` adds the S3 and GCS back ends.) `make demo` configures a
local folder served over HTTP; without any, the next cell serves one itself for this notebook.
"""),
    code("""
import functools
import http.server
import threading
from pathlib import Path

import nanobanana_magic

settings = nanobanana_magic.config()
if not settings.upload_to:
    folder = Path("uploads").absolute()
    folder.mkdir(exist_ok=True)

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.upload_to = folder.as_uri()
    settings.upload_public_url = f"http://127.0.0.1:{server.server_port}"
print("uploads go to", settings.upload_to, "served at", settings.upload_public_url)
"""),
    md("""
## 1. Generate

An ordinary cell; `-o banana` binds the result.
"""),
    code("""
%%nanobanana -a 4:3 -o banana
a ripe banana on a wooden kitchen table, soft morning light, photograph
"""),
    md("""
## 2. Edit the result

`-i @banana` uses that result as the reference. It finished moments ago, so its result URL is sent
as is (for `result_url_ttl` seconds, 300 by default; after that its saved file is uploaded). The
emulator draws the references it fetched as numbered thumbnails along the top of its picture.
"""),
    code("""
%%nanobanana -i @banana -a 4:3 -o peeled
the same banana, half peeled, same table and light
"""),
    md("""
## 3. Compose it with a local image

Any PNG, JPEG or WebP file works (absolute, `~/...`, or relative to the notebook's folder). Here we
draw one with Pillow, as a stand-in for a photo of your own; it is uploaded once, under its sha256.
"""),
    code("""
from PIL import Image, ImageDraw

plate = Image.new("RGB", (640, 480), "#f4efe6")
draw = ImageDraw.Draw(plate)
draw.ellipse((70, 60, 570, 420), fill="#2f6f9f", outline="#1d4766", width=12)
draw.ellipse((150, 120, 490, 360), fill="#f7f7f2")
plate.save("my_plate.png")
"""),
    code("""
%%nanobanana -i @peeled -i my_plate.png -a 16:9 -o served
the peeled banana from image 1, sliced and served on the plate from image 2, top view
"""),
    md("""
## The chain and its lineage

Every result knows the results it was made from (`parents`, task ids), and the run log keeps, per
reference, its source (URL, path or task id), the sha256 of its bytes and the URL sent.
"""),
    code("""
for step in (banana, peeled, served):
    parents = ", ".join(p[:12] for p in step.parents) or "none"
    print(f"{step.task_id[:12]}  parents: {parents:28}  {step.prompt[:50]}")
"""),
    code("""
import io

from IPython.display import Image as ShowImage
from PIL import ImageFont


def chain_picture(steps, labels, height=320):
    # The results left to right, an arrow between each, what each step added underneath.
    thumbs = [step.image.convert("RGB") for step in steps]
    thumbs = [t.resize((round(t.width * height / t.height), height)) for t in thumbs]
    gap, margin, caption = 70, 24, 44
    width = sum(t.width for t in thumbs) + gap * (len(thumbs) - 1) + 2 * margin
    canvas = Image.new("RGB", (width, height + caption + 2 * margin), "white")
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=18)
    except TypeError:  # Pillow before 10.1
        font = ImageFont.load_default()
    x, middle = margin, margin + height // 2
    for n, (thumb, label) in enumerate(zip(thumbs, labels)):
        if n:
            draw.line((x - gap + 12, middle, x - 16, middle), fill="#444", width=4)
            draw.polygon([(x - 8, middle), (x - 22, middle - 10), (x - 22, middle + 10)], fill="#444")
        canvas.paste(thumb, (x, margin))
        draw.text((x, margin + height + 12), label, fill="#222", font=font)
        x += thumb.width + gap
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=85)
    return out.getvalue()


chain = chain_picture(
    [banana, peeled, served],
    ["1. generate", "2. edit: -i @banana", "3. compose: -i @peeled -i my_plate.png"],
)
ShowImage(data=chain)
"""),
    md("""
`%nanobanana history` shows how many references each task had and its parents; `export` writes them
with the full provenance (here as JSON, for a methods section).
"""),
    code("%nanobanana history -n 3"),
    code("""
%nanobanana export lineage/generations.json
import json

record = next(r for r in json.load(open("lineage/generations.json")) if r["task_id"] == served.task_id)
for ref in record["references"]:
    print(ref["source"], "sha256", ref["sha256"][:16], "…")
print("parents:", record["parents"])
"""),
    md("""
## Re-running costs nothing

References are identified by their content, not by their (possibly signed, changing) URL: running
the composition again is answered from the saved file, with no API call and no upload.
"""),
    code("""
%%nanobanana -i @peeled -i my_plate.png -a 16:9
the peeled banana from image 1, sliced and served on the plate from image 2, top view
"""),
]


DATASET = [
    md("""
# From a table to a dataset

Many researchers generate images to build a dataset: a table of prompts and labels goes in, and
a folder that training code loads comes out. This notebook makes one from a 12-row table and a
2 × 2 × 3 sweep, exports both as one Hugging Face `imagefolder` dataset, and loads it back with
🤗 `datasets`.
"""),
    code("%load_ext nanobanana_magic"),
    code("""
import os

if not os.environ.get("NANOBANANA_API_KEY"):
    %nanobanana emulator start
"""),
    md("""
## A table of prompts and labels

`nanobanana_magic.generate_many` takes a DataFrame (anything with `.to_dict("records")`), a list
of dicts, prompts or `GenerationRequest`s. The columns that are parameters (`prompt`,
`aspect_ratio`, `resolution`, ...) make each request; every other column (here `id`, `label`,
`style` and `split`) is kept with the image, in the run log and in every export.
"""),
    code("""
import itertools

import pandas as pd

fruits = {"apple": "an apple", "banana": "a banana", "cherry": "a cherry", "pear": "a pear"}
styles = ["watercolour", "woodcut", "photo"]
table = pd.DataFrame(
    [
        {
            "id": f"fruit-{n:02d}",
            "prompt": f"a {style} of {fruits[label]} on a white table",
            "label": label,
            "style": style,
            "split": "test" if style == "photo" else "train",
            "aspect_ratio": "1:1",
        }
        for n, (label, style) in enumerate(itertools.product(fruits, styles))
    ]
)
table
"""),
    code("""
import nanobanana_magic

images = nanobanana_magic.generate_many(table)
[(g.status, g.path.name) for g in images[:3]]
"""),
    md("""
Running the same table again costs nothing: the rows that finished are answered from their saved
files, and a row still pending (say the kernel was restarted mid-batch) is attached to, not paid for again.
"""),
    code("""
again = nanobanana_magic.generate_many(table)
print(sum(g.cached for g in again), "of", len(again), "answered from the cache")
"""),
    md("""
## A sweep into the same dataset

A sweep's prompt variables (here `subject`) are kept with each image too, and its parameters
(`aspect_ratio`, `resolution`) are columns of every export anyway.
"""),
    code("""
subjects = ["a red fox", "a snowy owl", "a hedgehog"]
"""),
    code("""
%%nanobanana --sweep aspect_ratio=1:1,16:9 --sweep resolution=1K,2K --sweep subject=@subjects
{subject} in a field guide, flat colours
"""),
    md("""
## One export

`%nanobanana export --format imagefolder PATH` writes every generation of this folder's run log:
the images, one `metadata.jsonl` per split (the `split` column; rows without one go to `train`)
and a `README.md` dataset card. `--format webdataset` writes tar shards instead, and
`--since 2h` keeps only the recent tasks.
"""),
    code("%nanobanana export --format imagefolder dataset"),
    code("""
print(open("dataset/README.md").read())
"""),
    md("""
Exporting again is incremental and idempotent: only new images are added, and nothing already
exported is written again. The Python API does the same:
"""),
    code("""
print(nanobanana_magic.export("dataset/", format="imagefolder"))
"""),
    md("""
## Loaded back with 🤗 datasets
"""),
    code("""
from datasets import load_dataset

ds = load_dataset("imagefolder", data_dir="dataset")
ds
"""),
    code("""
import base64
import html
import io

from IPython.display import HTML


def thumbnail(image, px=150):
    image = image.convert("RGB")
    image.thumbnail((px, px))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def labelled_grid(rows, columns=6):
    cells = []
    for row in rows:
        label = row["label"] or row["subject"]  # a table row has a label, a sweep's row a subject
        detail = " · ".join(v for v in (row["split"] or "train", row["style"], row["aspect_ratio"], row["resolution"]) if v)
        cells.append(
            f"<figure style='margin:4px;text-align:center'><img src='{thumbnail(row['image'])}'>"
            f"<figcaption style='font-size:11px'><b>{html.escape(label)}</b><br>{html.escape(detail)}</figcaption></figure>"
        )
    style = f"display:grid;grid-template-columns:repeat({columns},auto);align-items:end"
    return HTML(f"<div style='{style}'>{''.join(cells)}</div>")


labelled_grid([row for split in ds for row in ds[split]])
"""),
]


def write(name: str, cells: list) -> None:
    notebook = new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    path = ROOT / "notebooks" / name
    nbformat.write(notebook, path)
    print("wrote", path.relative_to(ROOT))


if __name__ == "__main__":
    write("quickstart.ipynb", QUICKSTART)
    write("reproducible-research.ipynb", RESEARCH)
    write("control-panel.ipynb", PANEL)
    write("editing.ipynb", EDITING)
    write("dataset.ipynb", DATASET)
