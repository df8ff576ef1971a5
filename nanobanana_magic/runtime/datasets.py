"""Generations as datasets: a Hugging Face `imagefolder` directory or WebDataset tar shards.

The exporters take plain dict records (see `export_imagefolder`), not the run log's own
classes, so a change in how the run log is stored does not reach them.

Exports are incremental. An index in the destination (`.nanobanana-export.json`) maps each
exported task id to where its image went: exporting the same records again writes nothing,
more records add only the new ones, and a task is never exported twice. An exported task
keeps the row it was exported with; WebDataset shards, once written, are never rewritten.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..core.errors import NanoBananaError

INDEX = ".nanobanana-export.json"
METADATA = "metadata.jsonl"
CARD = "README.md"
MAX_PER_FOLDER = 10_000  # the Hugging Face Hub's limit of files per directory
SHARD_SIZE = 1000

# Request body key → column. The prompt has its own column, image URLs are described by
# `references`, and the callback URL says nothing about the image.
PARAMETERS = {
    "aspectRatio": "aspect_ratio",
    "resolution": "resolution",
    "outputFormat": "output_format",
    "googleSearch": "google_search",
}
NOT_PARAMETERS = {"prompt", "imageUrls", "callBackUrl"}
COLUMNS = [
    "file_name",
    "prompt",
    "task_id",
    *PARAMETERS.values(),
    "sha256",
    "references",
    "parents",
    "submitted",
    "finished",
    "elapsed_s",
]
TIME_COLUMNS = {"submitted", "finished"}
STANDARD_SPLITS = {"train", "validation", "test"}

# `datasets` assigns a file to a split when its name holds one of these words between
# separators (`a-test-1.png` → test); a key must not, or a split-less export loads wrongly.
_SPLIT_WORD = re.compile(
    r"(?:^|[-._ 0-9])(?:train|training|validation|valid|dev|val|test|testing|eval|evaluation)"
    r"[-._ 0-9]",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ExportReport:
    """What one export did: samples added, already there, and skipped with the reason."""

    added: int
    unchanged: int
    skipped: tuple[tuple[str, str], ...]  # (task id, reason)
    path: Path
    format: str

    def __str__(self) -> str:
        text = (
            f"{self.format} export to {self.path}: {self.added} added, {self.unchanged} unchanged, "
            f"{len(self.skipped)} skipped"
        )
        if self.skipped:
            reasons = Counter(reason for _, reason in self.skipped)
            text += " (" + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) + ")"
        return text


@dataclass(frozen=True)
class _Sample:
    """A record that can be exported: its image file and its row."""

    task_id: str
    source: Path
    ext: str
    key: str
    split: Any  # the raw `split` metadata value, or None
    row: dict


# -- public functions -------------------------------------------------------------------------


def export_imagefolder(
    records: Iterable[Mapping],
    dest: str | Path,
    *,
    source_dir: str | Path,
    endpoint: str,
    max_per_folder: int = MAX_PER_FOLDER,
) -> ExportReport:
    """Copy (hard-link when possible) the succeeded records' images into a Hugging Face imagefolder.

    A record is a dict with `task_id`, `status`, `request` (the JSON body sent), `file` (a
    name under `source_dir`, or an absolute path), `sha256`, `submitted` and `finished`
    (ISO times), `elapsed_s`, and optionally `metadata` (extra columns such as `label`,
    `split`, `id`), `references` (dicts with `source`, `sha256`, `url`) and `parents`
    (task ids). With a `split` column the images go to `<split>/KEY.<ext>`, each split with
    its own `metadata.jsonl`; otherwise to `KEY.<ext>` beside one `metadata.jsonl`. No
    folder holds more than `max_per_folder` files: the rest spill into `part-0001/`, ...
    The first export that adds images chooses between the two layouts for good.
    """
    if max_per_folder < 1:
        raise NanoBananaError(f"max_per_folder must be at least 1, not {max_per_folder}")
    dest = _prepare(dest)
    try:
        index = _load_index(dest, "imagefolder")
        items = index["items"]
        new, unchanged, skipped = _collect(records, items, Path(source_dir).expanduser())
        if index.get("layout") is None and new:
            has_split = any(s.split not in (None, "") for s in new)
            index["layout"] = "splits" if has_split else "flat"
        in_folder = Counter(str(PurePosixPath(item["path"]).parent) for item in items.values())
        for sample in new:
            split = split_name(sample.split) if index["layout"] == "splits" else None
            folder = _folder(split, in_folder, max_per_folder)
            path = str(PurePosixPath(folder) / f"{sample.key}.{sample.ext}")
            _place(sample.source, dest / path, sample.row["sha256"])
            in_folder[folder] += 1
            items[sample.task_id] = {"path": path, "split": split, "endpoint": _public(endpoint), "row": sample.row}
        _write_metadata(dest, items)
        _write_if_changed(dest / CARD, _card("imagefolder", dest.name, index))
        _save_index(dest, index)
    except OSError as exc:
        raise _os_error(dest, exc) from None
    return ExportReport(len(new), unchanged, tuple(skipped), dest, "imagefolder")


def export_webdataset(
    records: Iterable[Mapping], dest: str | Path, *, source_dir: str | Path, endpoint: str, shard_size: int = SHARD_SIZE
) -> ExportReport:
    """Write the succeeded records as WebDataset shards `shard-000000.tar`, ... of `KEY.<ext>` + `KEY.json`.

    Records are the dicts `export_imagefolder` takes. Each export writes its new samples
    into new shards of at most `shard_size` samples; earlier shards are left as they are.
    """
    if shard_size < 1:
        raise NanoBananaError(f"shard_size must be at least 1, not {shard_size}")
    dest = _prepare(dest)
    try:
        index = _load_index(dest, "webdataset")
        items, shards = index["items"], index["shards"]
        new, unchanged, skipped = _collect(records, items, Path(source_dir).expanduser())
        for start in range(0, len(new), shard_size):
            chunk = new[start : start + shard_size]
            name = f"shard-{len(shards):06d}.tar"
            _write_shard(dest / name, chunk)
            for sample in chunk:
                items[sample.task_id] = {
                    "path": f"{name}/{sample.key}.{sample.ext}",
                    "split": None,
                    "endpoint": _public(endpoint),
                    "row": sample.row,
                }
            shards.append({"name": name, "samples": len(chunk)})
            _save_index(dest, index)  # a shard is final once the index names it
        _write_if_changed(dest / CARD, _card("webdataset", dest.name, index))
        _save_index(dest, index)
    except OSError as exc:
        raise _os_error(dest, exc) from None
    return ExportReport(len(new), unchanged, tuple(skipped), dest, "webdataset")


def sample_key(task_id: str) -> str:
    """A stable file-name stem for a task: letters, digits, `_` and `-`, no dots, no split words."""
    key = re.sub(r"[^A-Za-z0-9_-]+", "_", task_id)[:64]
    if key != task_id:  # two ids that clean to the same text must still get two keys
        key = f"{key}-{_digest(task_id.encode(), 'sha1')[:10]}"
    if _SPLIT_WORD.search(key + "."):  # hex digits cannot spell a split word
        key = "task-" + _digest(task_id.encode(), "sha1")[:16]
    return key


def split_name(value: Any) -> str:
    """A split directory name from a `split` value: lower case letters, digits and `_`; `train` if empty."""
    name = re.sub(r"[^a-z0-9_]+", "_", str(value if value is not None else "").strip().lower()).strip("_")
    return name or "train"


# -- records → samples ------------------------------------------------------------------------


def _collect(
    records: Iterable[Mapping], exported: Mapping[str, Any], source_dir: Path
) -> tuple[list[_Sample], int, list[tuple[str, str]]]:
    """The records not exported yet that can be, how many were exported before, and why the rest cannot."""
    new: list[_Sample] = []
    unchanged = 0
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for record in records:
        task_id = str(record.get("task_id") or "")
        if not task_id or task_id in seen:
            skipped.append((task_id, "listed twice" if task_id else "no task id"))
            continue
        seen.add(task_id)
        if task_id in exported:
            unchanged += 1
            continue
        sample = _sample(record, task_id, source_dir)
        if isinstance(sample, str):
            skipped.append((task_id, sample))
        else:
            new.append(sample)
    return new, unchanged, skipped


def _sample(record: Mapping, task_id: str, source_dir: Path) -> _Sample | str:
    """The record as a sample, or the reason it cannot be exported."""
    status = record.get("status")
    if status != "succeeded":
        return str(status or "no status")
    if not record.get("file"):
        return "no file"
    source = Path(str(record["file"])).expanduser()
    source = source if source.is_absolute() else source_dir / source
    if not source.is_file():
        return "file missing"
    data = source.read_bytes()
    ext = _image_ext(data)
    if ext is None:
        return "not a PNG, JPEG or WebP image"
    digest = _digest(data)
    if record.get("sha256") and record["sha256"] != digest:
        return "sha256 mismatch"
    metadata = record.get("metadata") or {}
    return _Sample(task_id, source, ext, sample_key(task_id), metadata.get("split"), _row(record, task_id, digest))


def _row(record: Mapping, task_id: str, digest: str) -> dict:
    """Everything known about one image, as JSON values (lists stay lists here)."""
    request = record.get("request") or {}
    row: dict[str, Any] = {"prompt": str(request.get("prompt") or ""), "task_id": task_id}
    for key, column in PARAMETERS.items():
        row[column] = _scalar(request.get(key))
    for key in sorted(request):
        if key not in PARAMETERS and key not in NOT_PARAMETERS:
            row.setdefault(_snake(str(key)), _scalar(request[key]))
    row["sha256"] = digest
    row["references"] = _references(record, request)
    row["parents"] = [str(p) for p in record.get("parents") or []]
    row["submitted"], row["finished"] = _utc(record.get("submitted")), _utc(record.get("finished"))
    row["elapsed_s"] = _elapsed(record.get("elapsed_s"), row["submitted"], row["finished"])
    for key, value in (record.get("metadata") or {}).items():
        row[_user_column(str(key), row)] = _scalar(value)
    return row


def _references(record: Mapping, request: Mapping) -> list[dict]:
    refs = record.get("references")
    if refs is None:  # an older record: the body's image URLs are all there is
        refs = [{"source": url, "sha256": None, "url": url} for url in request.get("imageUrls") or []]
    out = []
    for ref in refs:
        ref = ref if isinstance(ref, Mapping) else {"source": ref}
        out.append({key: None if ref.get(key) is None else str(ref[key]) for key in ("source", "sha256", "url")})
    return out


def _user_column(key: str, row: Mapping) -> str:
    """The user's column name, renamed when it would shadow a column of ours or read as an image path."""
    name = key
    while (
        name in row
        or name in COLUMNS
        or name == "image"
        or name == "file_names"
        or name.endswith(("_file_name", "_file_names"))
    ):
        name = "meta_" + name
    return name


def _scalar(value: Any) -> Any:
    """A JSON value: NaN and infinities become null, other objects their text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _scalar(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scalar(v) for v in value]
    return str(value)


def _utc(value: Any) -> str | None:
    """An ISO time (or epoch seconds) as `YYYY-MM-DDTHH:MM:SSZ`; naive times are this machine's local time."""
    if value in (None, "") or isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            moment = datetime.fromtimestamp(value, timezone.utc)
        else:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _elapsed(value: Any, submitted: str | None, finished: str | None) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return round(float(value), 3)
    if submitted and finished:
        start, end = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (submitted, finished))
        return round((end - start).total_seconds(), 3)
    return None


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _image_ext(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _digest(data: bytes, algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, data).hexdigest()


def _public(endpoint: str) -> str:
    """The endpoint without user info, query or fragment: a dataset card is meant to be shared."""
    parts = urlsplit(str(endpoint))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) if parts.scheme else str(endpoint)


# -- imagefolder ------------------------------------------------------------------------------


def _folder(split: str | None, in_folder: Counter, limit: int) -> str:
    """The first folder of the split with room; the split's own folder also holds metadata.jsonl
    (and at the top, README.md and the index), which count towards the limit."""
    base = split or "."
    reserved = 1 if split else 3
    if in_folder[base] < limit - reserved:
        return base
    part = 1
    while in_folder[str(PurePosixPath(base) / f"part-{part:04d}")] >= limit:
        part += 1
    return str(PurePosixPath(base) / f"part-{part:04d}")


def _place(source: Path, target: Path, digest: str) -> None:
    """Hard-link (else copy) the image to `target`, atomically; a file already there with the same bytes stays."""
    if target.is_file() and _digest(target.read_bytes()) == digest:
        return  # left by an export that stopped before saving its index
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:  # another file system, or links not supported
        shutil.copyfile(source, partial)
    os.replace(partial, target)


def _write_metadata(dest: Path, items: Mapping[str, Mapping]) -> None:
    """One metadata.jsonl per split folder (or one at the top), `file_name` relative to it."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for item in items.values():
        base = item["split"] or "."
        name = str(PurePosixPath(item["path"]).relative_to(base)) if base != "." else item["path"]
        groups[base].append({"file_name": name, **item["row"]})
    for base, rows in _typed(groups).items():
        text = "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
        _write_if_changed(dest / base / METADATA, text)


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number" if isinstance(value, float) else "int"
    return "text" if isinstance(value, str) else "json"


def _typed(groups: Mapping[str, list[dict]]) -> dict[str, list[dict]]:
    """The rows of every metadata file with the same columns, each column of one type everywhere.

    `datasets` infers the types of each metadata.jsonl on its own and refuses to load when
    two splits disagree, and pyarrow refuses a column that mixes kinds. So every row gets
    every column (null when missing); lists and dicts become JSON text; a column mixing
    kinds becomes text; numbers mixing ints and floats become floats; and a column that
    has values in one split but none in another becomes text, with "" in the split that
    has no value at all (a column of nulls only would be typed null there).
    """
    order = {name: i for i, name in enumerate(COLUMNS)}
    columns = sorted(
        {c for rows in groups.values() for row in rows for c in row}, key=lambda c: (order.get(c, len(order)), c)
    )
    encode = {}
    for column in columns:
        kinds = {base: {_kind(row.get(column)) for row in rows} - {None} for base, rows in groups.items()}
        every = set().union(*kinds.values())
        gap = bool(every) and any(not found for found in kinds.values())
        as_text = gap or "json" in every or (len(every - {"int", "number"}) > 0 and len(every) > 1)
        as_float = not as_text and every == {"int", "number"}
        encode[column] = (as_text, as_float, {base for base, found in kinds.items() if not found} if gap else set())
    typed = {}
    for base, rows in groups.items():
        typed[base] = [{c: _encode(row.get(c), c, *encode[c], base) for c in columns} for row in rows]
    return typed


def _encode(value: Any, column: str, as_text: bool, as_float: bool, empty_in: set, base: str) -> Any:
    if value is None:
        return "" if base in empty_in else None
    if as_float:
        return float(value)
    if not as_text or (isinstance(value, str) and column not in TIME_COLUMNS):
        return value
    if column in TIME_COLUMNS:  # "…T…Z" would still be read as a timestamp, not text
        return value.replace("T", " ").replace("Z", " UTC")
    return json.dumps(value, ensure_ascii=False)


# -- webdataset -------------------------------------------------------------------------------


def _write_shard(path: Path, samples: list[_Sample]) -> None:
    """One tar of `KEY.<ext>` + `KEY.json` pairs with fixed owners and times, written atomically."""
    partial = path.with_name(f".{path.name}.partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for sample in samples:
            finished = sample.row.get("finished")
            mtime = int(datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp()) if finished else 0
            meta = json.dumps(sample.row, ensure_ascii=False, allow_nan=False, indent=1).encode("utf-8")
            _add(tar, f"{sample.key}.{sample.ext}", sample.source.read_bytes(), mtime)
            _add(tar, f"{sample.key}.json", meta, mtime)
    os.replace(partial, path)


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))


# -- destination and index --------------------------------------------------------------------


def _prepare(dest: str | Path) -> Path:
    """The destination directory, created if missing; a file or an unwritable place is an error."""
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise NanoBananaError(f"export destination {dest} is a file; give a directory (it is created if missing)")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NanoBananaError(f"cannot create the export directory {dest}: {exc.strerror or exc}") from None
    if not os.access(dest, os.W_OK | os.X_OK):
        raise NanoBananaError(f"export directory {dest} is not writable; choose another directory")
    return dest


def _load_index(dest: Path, fmt: str) -> dict:
    """The destination's index; a new one (saved at once) for an empty directory."""
    path = dest / INDEX
    if not path.exists():
        if any(dest.iterdir()):
            raise NanoBananaError(
                f"{dest} is not empty and holds no nanobanana export; export into a new or empty directory"
            )
        index: dict[str, Any] = {"format": fmt, "version": 1, "items": {}}
        if fmt == "imagefolder":
            index["layout"] = None
        else:
            index["shards"] = []
        _save_index(dest, index)
        return index
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise NanoBananaError(f"{path} is not valid JSON; remove the directory to export again") from None
    if not isinstance(index, dict) or not isinstance(index.get("items"), dict):
        raise NanoBananaError(f"{path} is not an export index; remove the directory to export again")
    if index.get("format") != fmt:
        raise NanoBananaError(f"{dest} holds a {index.get('format')} export; export {fmt} into another directory")
    return index


def _save_index(dest: Path, index: Mapping) -> None:
    _write_if_changed(dest / INDEX, json.dumps(index, ensure_ascii=False, indent=1) + "\n")


def _write_if_changed(path: Path, text: str) -> None:
    """Write atomically, and not at all when the file already holds this text (its mtime stays)."""
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _os_error(dest: Path, exc: OSError) -> NanoBananaError:
    where = f" ({exc.filename})" if exc.filename else ""
    return NanoBananaError(f"export to {dest} failed: {exc.strerror or exc}{where}")


# -- dataset card -----------------------------------------------------------------------------


def _card(fmt: str, name: str, index: Mapping) -> str:
    """README.md for the export: YAML front matter for the Hub, counts, parameters, provenance, loading."""
    items = list(index["items"].values())
    rows = [item["row"] for item in items]
    splits = Counter(item["split"] for item in items if item["split"])
    lines = [
        "---",
        "task_categories:",
        "- text-to-image",
        "tags:",
        "- nanobanana",
        "- synthetic",
        "size_categories:",
        f"- {_size_category(len(rows))}",
    ]
    if splits:
        lines += ["configs:", "- config_name: default", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {split}/**" for split in sorted(splits)]
    lines += ["---", "", f"# {name}", ""]
    layout = (
        "Hugging Face `imagefolder` layout: the images with a `metadata.jsonl` beside them"
        + (", one per split" if splits else "")
        if fmt == "imagefolder"
        else "WebDataset tar shards of `KEY.png`/`KEY.jpg` + `KEY.json`"
    )
    lines += [
        f"{len(rows)} images generated with the NanoBanana image API, exported by nanobanana-magic in {layout}.",
        "",
    ]
    if splits:
        lines += ["| split | images |", "|---|---:|", *(f"| {s} | {n} |" for s, n in sorted(splits.items())), ""]
    if fmt == "webdataset":
        shards = index.get("shards") or []
        lines += [f"{len(shards)} shards: " + ", ".join(f"`{s['name']}` ({s['samples']})" for s in shards), ""]
    lines += ["## Generation", ""]
    endpoints = Counter(item["endpoint"] for item in items)
    lines += ["- API endpoint: " + ", ".join(f"`{e}` ({n} images)" for e, n in sorted(endpoints.items()))]
    submitted = sorted(r["submitted"] for r in rows if r.get("submitted"))
    finished = sorted(r["finished"] for r in rows if r.get("finished"))
    lines += [f"- Submitted {_span(submitted)}; finished {_span(finished)} (UTC)", ""]
    lines += ["| parameter | value | images |", "|---|---|---:|"]
    for column in PARAMETERS.values():
        counts = Counter(_shown(r.get(column)) for r in rows)
        lines += [f"| {column} | {v} | {n} |" for v, n in sorted(counts.items(), key=lambda vn: (-vn[1], vn[0]))]
    lines += ["", "## Reference images", "", _references_line(rows), ""]
    lines += [
        "## Columns",
        "",
        "Each "
        + ("row of `metadata.jsonl`" if fmt == "imagefolder" else "`KEY.json`")
        + " holds: "
        + ", ".join(f"`{c}`" for c in _card_columns(fmt, rows))
        + ".",
        "`sha256` is the image file's; `references` lists each reference image's `source` (URL, file "
        "or task id), `sha256` and the `url` sent; `parents` the task ids of the generations used as "
        "references."
        + (" In `metadata.jsonl`, `references` and `parents` are JSON text." if fmt == "imagefolder" else ""),
        "Missing values are null"
        + (
            "; a column with no value in a whole split holds \"\" there (so every split has the same column types)."
            if splits
            else "."
        ),
        "",
    ]
    lines += ["## Loading", "", "```python", *_loading(fmt, name, sorted(splits), index), "```", ""]
    return "\n".join(lines)


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def _span(times: list[str]) -> str:
    return f"{times[0]} to {times[-1]}" if times else "at unknown times"


def _shown(value: Any) -> str:
    return "(not sent)" if value is None else json.dumps(value) if not isinstance(value, str) else value


def _references_line(rows: list[dict]) -> str:
    kinds: Counter = Counter()
    for row in rows:
        for ref in row.get("references") or []:
            source = ref.get("source") or ref.get("url") or ""
            kinds[
                "generation"
                if source in row.get("parents", [])
                else "URL"
                if re.match(r"https?://", source)
                else "local file or upload"
            ] += 1
    using = sum(1 for row in rows if row.get("references"))
    with_parents = sum(1 for row in rows if row.get("parents"))
    if not using and not with_parents:
        return "No image used reference images."
    sources = ", ".join(_count(n, kind) for kind, n in sorted(kinds.items())) or "none recorded"
    return (
        f"{using} of {len(rows)} images used reference images ({sources}); "
        f"{_count(with_parents, 'image')} with parents (earlier generations used as references)."
    )


def _count(n: int, noun: str) -> str:
    plural = noun.replace("file or upload", "files or uploads") if "file or upload" in noun else noun + "s"
    return f"{n} {noun if n == 1 else plural}"


def _card_columns(fmt: str, rows: list[dict]) -> list[str]:
    order = {name: i for i, name in enumerate(COLUMNS)}
    names = {c for row in rows for c in row} | ({"file_name"} if fmt == "imagefolder" else set())
    return sorted(names, key=lambda c: (order.get(c, len(order)), c))


def _loading(fmt: str, name: str, splits: list[str], index: Mapping) -> list[str]:
    if fmt == "imagefolder":
        lines = ["from datasets import load_dataset", "", f"# run where the directory {name}/ is"]
        if set(splits) <= STANDARD_SPLITS:
            return lines + [f'ds = load_dataset("imagefolder", data_dir="{name}")']
        files = ", ".join(f'"{s}": "{s}/**"' for s in splits)
        return lines + [f'ds = load_dataset("imagefolder", data_dir="{name}", data_files={{{files}}})']
    shards = index.get("shards") or []
    pattern = f"shard-{{000000..{len(shards) - 1:06d}}}.tar" if len(shards) > 1 else "shard-000000.tar"
    return [
        "import webdataset as wds",
        "",
        f"# run where the directory {name}/ is",
        f'ds = wds.WebDataset("{name}/{pattern}", shardshuffle=False).decode("pil")',
        "for sample in ds:",
        '    image = sample.get("png") or sample.get("jpg") or sample.get("webp")',
        '    meta = sample["json"]  # task_id, prompt, parameters, references, ...',
    ]
