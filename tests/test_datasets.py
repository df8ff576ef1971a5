"""Dataset exports, loaded back with the real `datasets` and `webdataset` libraries."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from nanobanana_magic.core.errors import NanoBananaError
from nanobanana_magic.runtime.datasets import ExportReport, export_imagefolder, export_webdataset, sample_key

ENDPOINT = "https://api.nanobanana.test"


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hf(tmp_path_factory):
    """`load_dataset` with no network and every cache in a temporary directory."""
    home = tmp_path_factory.mktemp("hf-home")
    # datasets reads these when it is imported, so they are set before the import.
    os.environ.update(HF_HOME=str(home), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    datasets = pytest.importorskip("datasets")
    calls = iter(range(10**6))
    real = datasets.load_dataset  # a test may put `load` in its place

    def load(*args, **kwargs):
        return real(*args, cache_dir=str(home / f"cache-{next(calls)}"), **kwargs)

    return load


def _image(path: Path, size: tuple[int, int], fmt: str) -> str:
    Image.new("RGB", size, (200, 30, 30)).save(path, fmt)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _records(source: Path, *, splits: bool = True) -> list[dict]:
    """12 rows: 9 exportable (6 train, 3 test), 2 failed, 1 whose file is gone; references on some."""
    records = []
    for i in range(12):
        task_id = f"task{i:03d}"
        fmt, ext = ("JPEG", "jpg") if i % 3 == 2 else ("PNG", "png")
        status = "failed" if i in (4, 9) else "succeeded"
        name = f"20260101-1000{i:02d}_{task_id}.{ext}"
        sha = _image(source / name, (10 + i, 20 + i), fmt) if status == "succeeded" else None
        metadata = {"label": "cat" if i % 2 else "dog", "id": i}
        if splits:
            metadata["split"] = "test" if i in (1, 5, 10) else "train"
            if metadata["split"] == "train" and i % 4 == 0:
                metadata["note"] = "first of four"  # a column the test split never has
        record = {
            "task_id": task_id,
            "status": status,
            "file": name if sha else None,
            "sha256": sha,
            "request": {
                "prompt": f"a {metadata['label']} number {i}",
                "aspectRatio": "1:1" if i < 6 else "16:9",
                "resolution": "2K" if i in (3, 7) else "1K",
                "googleSearch": False,
                "outputFormat": ext if ext == "png" else "jpg",
            },
            "submitted": f"2026-01-01T10:{i:02d}:00+00:00",
            "finished": f"2026-01-01T10:{i:02d}:07+00:00",
            "elapsed_s": 7.0,
            "metadata": metadata,
        }
        if i == 3:
            record["references"] = [
                {"source": "https://example.test/ref.png", "sha256": None, "url": "https://example.test/ref.png"}
            ]
        if i == 6:
            record["references"] = [
                {"source": "task003", "sha256": sha, "url": "https://files.test/r3.png"},
                {"source": "/home/me/sketch.png", "sha256": "ab" * 32, "url": "https://uploads.test/ab.png"},
            ]
            record["parents"] = ["task003"]
        records.append(record)
    (source / records[11]["file"]).unlink()  # succeeded, but the file was deleted since
    return records


@pytest.fixture
def source(tmp_path):
    directory = tmp_path / "outputs"
    directory.mkdir()
    return directory


@pytest.fixture
def records(source):
    return _records(source)


def _snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()
    }


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _snippet(card: str) -> str:
    return re.search(r"```python\n(.*?)```", card, re.S).group(1)


# -- imagefolder ------------------------------------------------------------------------------


def test_imagefolder_loads_with_datasets_with_splits_labels_prompts_and_sizes(tmp_path, source, records, hf):
    dest = tmp_path / "dataset"
    report = export_imagefolder(records, dest, source_dir=source, endpoint=ENDPOINT)

    assert (report.added, report.unchanged, report.format, report.path) == (9, 0, "imagefolder", dest)
    assert sorted(report.skipped) == [("task004", "failed"), ("task009", "failed"), ("task011", "file missing")]
    ds = hf("imagefolder", data_dir=str(dest))
    assert {name: ds[name].num_rows for name in ds} == {"train": 6, "test": 3}
    by_id = {row["task_id"]: row for name in ds for row in ds[name]}
    for record in records:
        if record["task_id"] not in by_id:
            continue
        row, i = by_id[record["task_id"]], int(record["task_id"][4:])
        assert row["image"].size == (10 + i, 20 + i)
        assert (row["label"], row["split"], row["id"]) == (record["metadata"]["label"], record["metadata"]["split"], i)
        assert row["prompt"] == record["request"]["prompt"]
        assert (row["aspect_ratio"], row["resolution"], row["google_search"]) == (
            record["request"]["aspectRatio"],
            record["request"]["resolution"],
            False,
        )
        assert row["sha256"] == record["sha256"] and row["elapsed_s"] == 7.0
    assert json.loads(by_id["task006"]["references"])[0]["source"] == "task003"
    assert json.loads(by_id["task006"]["parents"]) == ["task003"]
    assert json.loads(by_id["task000"]["references"]) == [] and json.loads(by_id["task000"]["parents"]) == []
    assert str(by_id["task000"]["submitted"]).startswith("2026-01-01")
    assert (dest / "train" / "task000.png").stat().st_ino == (source / records[0]["file"]).stat().st_ino


def test_imagefolder_writes_one_metadata_file_per_split_with_the_same_columns_and_types(tmp_path, source, records):
    dest = tmp_path / "dataset"
    export_imagefolder(records, dest, source_dir=source, endpoint=ENDPOINT)

    train, test = _jsonl(dest / "train" / "metadata.jsonl"), _jsonl(dest / "test" / "metadata.jsonl")
    assert not (dest / "metadata.jsonl").exists()
    assert [list(r) for r in train + test] == [list(train[0])] * 9
    assert list(train[0])[:7] == [
        "file_name",
        "prompt",
        "task_id",
        "aspect_ratio",
        "resolution",
        "output_format",
        "google_search",
    ]
    for column in ("sha256", "references", "parents", "submitted", "finished", "elapsed_s", "label", "id", "split"):
        assert column in train[0]
    assert {r["file_name"] for r in test} == {"task001.png", "task005.jpg", "task010.png"}
    assert all((dest / "train" / r["file_name"]).is_file() for r in train)
    # `note` has values in train only: text everywhere, null where missing, "" in the split without any
    assert [r["note"] for r in train] == ["first of four", None, None, None, None, "first of four"]
    assert {r["note"] for r in test} == {""}


def test_imagefolder_without_a_split_column_puts_everything_at_the_top(tmp_path, source, hf):
    records = _records(source, splits=False)
    records[0]["task_id"] = "abc-test-1"  # a split word in a file name would make datasets call it a test file
    dest = tmp_path / "flat"
    export_imagefolder(records, dest, source_dir=source, endpoint=ENDPOINT)

    rows = _jsonl(dest / "metadata.jsonl")
    assert len(rows) == 9 and all("/" not in r["file_name"] for r in rows)
    assert sample_key("abc-test-1") in {Path(r["file_name"]).stem for r in rows}
    ds = hf("imagefolder", data_dir=str(dest))
    assert list(ds) == ["train"] and ds["train"].num_rows == 9
    assert "abc-test-1" in ds["train"]["task_id"]


def test_imagefolder_spills_into_numbered_part_folders_below_the_limit(tmp_path, source, records, hf):
    dest = tmp_path / "dataset"
    export_imagefolder(records[:6], dest, source_dir=source, endpoint=ENDPOINT, max_per_folder=3)
    export_imagefolder(records, dest, source_dir=source, endpoint=ENDPOINT, max_per_folder=3)

    for folder in [dest, *(p for p in dest.rglob("*") if p.is_dir())]:
        assert sum(1 for p in folder.iterdir() if p.is_file()) <= 3, folder
    train = _jsonl(dest / "train" / "metadata.jsonl")
    assert [r["file_name"] for r in train] == [
        "task000.png",
        "task002.jpg",
        "part-0001/task003.png",
        "part-0001/task006.png",
        "part-0001/task007.png",
        "part-0002/task008.jpg",
    ]
    ds = hf("imagefolder", data_dir=str(dest))
    assert ds["train"].num_rows == 6 and ds["train"][5]["image"].size == (18, 28)


def test_imagefolder_custom_split_names_load_with_the_cards_snippet(tmp_path, source, records, hf, monkeypatch):
    for record in records:
        if record["metadata"]["split"] == "test":
            record["metadata"]["split"] = "Hold Out"
    dest = tmp_path / "dataset"
    export_imagefolder(records, dest, source_dir=source, endpoint=ENDPOINT)

    assert (dest / "hold_out" / "metadata.jsonl").is_file()
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets, "load_dataset", hf)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(_snippet((dest / "README.md").read_text()), namespace)
    assert {name: namespace["ds"][name].num_rows for name in namespace["ds"]} == {"train": 6, "hold_out": 3}


def test_imagefolder_card_counts_parameters_dates_endpoint_and_reference_sources(tmp_path, source, records, hf):
    dest = tmp_path / "dataset"
    export_imagefolder(records, dest, source_dir=source, endpoint="https://user:pw@api.nanobanana.test/?key=x")
    card = (dest / "README.md").read_text()

    yaml = pytest.importorskip("yaml")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["task_categories"] == ["text-to-image"] and front["size_categories"] == ["n<1K"]
    assert front["configs"][0]["data_files"] == [
        {"split": "test", "path": "test/**"},
        {"split": "train", "path": "train/**"},
    ]
    assert "| train | 6 |" in card and "| test | 3 |" in card
    assert "| resolution | 1K | 7 |" in card and "| resolution | 2K | 2 |" in card
    assert "| aspect_ratio | 1:1 | 5 |" in card and "| aspect_ratio | 16:9 | 4 |" in card
    assert "Submitted 2026-01-01T10:00:00Z to 2026-01-01T10:10:00Z" in card
    assert "`https://api.nanobanana.test/` (9 images)" in card and "pw" not in card and "key=x" not in card
    assert (
        "2 of 9 images used reference images (1 URL, 1 generation, 1 local file or upload); 1 image with parents"
    ) in card
    assert 'load_dataset("imagefolder", data_dir="dataset")' in card
    assert hf(str(dest))["test"].num_rows == 3  # the card's `configs` are read when loading the directory itself


# -- webdataset -------------------------------------------------------------------------------


def test_webdataset_shards_iterate_and_decode_with_webdataset(tmp_path, source, records):
    wds = pytest.importorskip("webdataset")
    dest = tmp_path / "shards"
    report = export_webdataset(records, dest, source_dir=source, endpoint=ENDPOINT, shard_size=4)

    assert (report.added, report.format, len(report.skipped)) == (9, "webdataset", 3)
    assert sorted(p.name for p in dest.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(dest / "shard-000000.tar") as tar:
        assert tar.getnames() == [
            "task000.png",
            "task000.json",
            "task001.png",
            "task001.json",
            "task002.jpg",
            "task002.json",
            "task003.png",
            "task003.json",
        ]
    samples = list(wds.WebDataset(str(dest / "shard-{000000..000002}.tar"), shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in samples] == [
        r["task_id"] for r in records if r["task_id"] not in ("task004", "task009", "task011")
    ]
    for sample in samples:
        i = int(sample["__key__"][4:])
        image = sample.get("png") or sample.get("jpg")
        assert image.size == (10 + i, 20 + i)
        meta = sample["json"]
        assert meta["task_id"] == sample["__key__"] and meta["label"] == ("cat" if i % 2 else "dog")
        assert meta["prompt"].endswith(f"number {i}") and meta["resolution"] in ("1K", "2K")
        assert isinstance(meta["references"], list) and isinstance(meta["parents"], list)
    assert samples[5]["json"]["parents"] == ["task003"]  # task006


def test_webdataset_card_snippet_runs(tmp_path, source, records, monkeypatch):
    pytest.importorskip("webdataset")
    dest = tmp_path / "shards"
    export_webdataset(records, dest, source_dir=source, endpoint=ENDPOINT, shard_size=5)
    card = (dest / "README.md").read_text()

    assert "2 shards: `shard-000000.tar` (5), `shard-000001.tar` (4)" in card
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(_snippet(card), namespace)  # iterates every sample
    assert namespace["meta"]["task_id"] == "task010" and namespace["image"].size == (20, 30)


# -- incremental and idempotent ---------------------------------------------------------------


@pytest.mark.parametrize("export", [export_imagefolder, export_webdataset])
def test_exporting_the_same_records_again_changes_no_file(tmp_path, source, records, export):
    dest = tmp_path / "dataset"
    export(records, dest, source_dir=source, endpoint=ENDPOINT)
    before = _snapshot(dest)
    report = export(records, dest, source_dir=source, endpoint=ENDPOINT)

    assert (report.added, report.unchanged, len(report.skipped)) == (0, 9, 3)
    assert _snapshot(dest) == before


@pytest.mark.parametrize("export", [export_imagefolder, export_webdataset])
def test_exporting_more_records_adds_only_the_new_ones(tmp_path, source, records, export):
    dest = tmp_path / "dataset"
    first = export(records[:6], dest, source_dir=source, endpoint=ENDPOINT)
    before = _snapshot(dest)
    second = export(records[::-1], dest, source_dir=source, endpoint=ENDPOINT)

    assert (first.added, second.added, second.unchanged) == (5, 4, 5)
    after = _snapshot(dest)
    images = [name for name in before if name.endswith((".png", ".jpg", ".tar"))]
    assert images and all(after[name] == before[name] for name in images)  # nothing exported is rewritten
    index = json.loads((dest / ".nanobanana-export.json").read_text())
    assert len(index["items"]) == 9
    if export is export_webdataset:
        assert [s["samples"] for s in index["shards"]] == [5, 4]
        names = [n for shard in sorted(dest.glob("*.tar")) for n in tarfile.open(shard).getnames()]
        assert len(names) == len(set(names)) == 18
    else:
        rows = _jsonl(dest / "train" / "metadata.jsonl") + _jsonl(dest / "test" / "metadata.jsonl")
        assert sorted(r["task_id"] for r in rows) == sorted(index["items"])


def test_a_file_whose_sha256_differs_from_the_run_log_is_skipped(tmp_path, source, records):
    records[0]["sha256"] = "0" * 64
    report = export_imagefolder(records, tmp_path / "dataset", source_dir=source, endpoint=ENDPOINT)

    assert ("task000", "sha256 mismatch") in report.skipped and report.added == 8


def test_report_is_one_line_with_the_skip_reasons(tmp_path, source, records):
    report = export_imagefolder(records + records[:1], tmp_path / "ds", source_dir=source, endpoint=ENDPOINT)

    assert isinstance(report, ExportReport)
    assert str(report) == (
        f"imagefolder export to {tmp_path / 'ds'}: 9 added, 0 unchanged, 4 skipped "
        "(2 failed, 1 file missing, 1 listed twice)"
    )


# -- errors -----------------------------------------------------------------------------------


def test_a_destination_that_is_a_file_is_a_one_line_error(tmp_path, source, records):
    (tmp_path / "taken").write_text("x")
    for dest in (tmp_path / "taken", tmp_path / "taken" / "below"):
        with pytest.raises(NanoBananaError) as info:
            export_imagefolder(records, dest, source_dir=source, endpoint=ENDPOINT)
        assert "\n" not in str(info.value) and str(dest) in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_a_destination_that_is_not_writable_is_a_one_line_error(tmp_path, source, records):
    dest = tmp_path / "locked"
    dest.mkdir()
    dest.chmod(0o500)
    try:
        with pytest.raises(NanoBananaError, match="not writable"):
            export_webdataset(records, dest, source_dir=source, endpoint=ENDPOINT)
    finally:
        dest.chmod(0o700)


def test_a_directory_holding_other_files_or_the_other_format_is_refused(tmp_path, source, records):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(NanoBananaError, match="not empty"):
        export_imagefolder(records, tmp_path / "mine", source_dir=source, endpoint=ENDPOINT)
    export_webdataset(records, tmp_path / "shards", source_dir=source, endpoint=ENDPOINT)
    with pytest.raises(NanoBananaError, match="holds a webdataset export"):
        export_imagefolder(records, tmp_path / "shards", source_dir=source, endpoint=ENDPOINT)


# -- from a batch of rows to an export, through the session and the magics --------------------


class Frame:
    """DataFrame-like: pandas is not a dependency, `.to_dict("records")` is all generate_many reads."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def to_dict(self, orient: str) -> list[dict]:
        assert orient == "records"
        return [dict(r) for r in self.rows]


def _table(n: int = 6) -> Frame:
    return Frame(
        [
            {
                "prompt": f"a labelled fruit {i}",
                "label": "apple" if i % 2 else "pear",
                "split": "test" if i == 1 else "train",
                "id": i,
                "resolution": "2K" if i == 2 else float("nan"),  # an empty cell: the default
                "aspectRatio": "4:3",
            }
            for i in range(n)
        ]
    )


def _magics(shell):
    return shell.magics_manager.registry["NanoBananaMagics"]


def test_generate_many_takes_a_dataframe_and_keeps_the_other_columns_as_metadata(shell, emulator):
    import nanobanana_magic

    gens = nanobanana_magic.generate_many(_table())
    assert [g.status for g in gens] == ["succeeded"] * 6
    bodies = [g.request for g in gens]
    assert [b["resolution"] for b in bodies] == ["1K", "1K", "2K", "1K", "1K", "1K"]
    assert {b["aspectRatio"] for b in bodies} == {"4:3"} and "label" not in bodies[0]
    entries = {e.task_id: e for e in _magics(shell).session.store.entries()}
    assert [entries[g.task_id].metadata for g in gens][:2] == [
        {"label": "pear", "split": "train", "id": 0},
        {"label": "apple", "split": "test", "id": 1},
    ]


def test_a_pandas_dataframe_gives_plain_json_metadata(shell, emulator):
    pd = pytest.importorskip("pandas")
    import nanobanana_magic

    frame = pd.DataFrame({"prompt": ["a pandas row", "another"], "id": [7, 8], "weight": [0.5, None]})
    gens = nanobanana_magic.generate_many(frame)
    log = [json.loads(line) for line in (Path(_magics(shell).output_dir) / "runs.jsonl").read_text().splitlines()]
    metadata = [r["metadata"] for r in log if r["event"] == "submitted"]
    assert metadata == [{"id": 7, "weight": 0.5}, {"id": 8, "weight": None}]
    assert all(g.status == "succeeded" for g in gens)


def test_generate_many_uses_the_configured_defaults_for_missing_columns(shell, emulator):
    import nanobanana_magic

    shell.run_cell("%config NanoBananaMagics.output_format = 'jpg'")
    (gen,) = nanobanana_magic.generate_many([{"prompt": "a configured row", "tag": "x"}])
    assert gen.request["outputFormat"] == "jpg"


def test_a_bad_row_is_a_one_line_error_naming_it_and_nothing_is_sent(shell, emulator):
    import nanobanana_magic

    rows = [{"prompt": "fine"}, {"prompt": "bad ratio", "aspect_ratio": "7:3"}]
    with pytest.raises(NanoBananaError, match=r"^row 1: aspect ratio '7:3' is not supported"):
        nanobanana_magic.generate_many(rows)
    with pytest.raises(NanoBananaError, match=r"^row 0: no prompt; a row needs a 'prompt' column \(it has label\)"):
        nanobanana_magic.generate_many([{"label": "cat"}])
    with pytest.raises(
        NanoBananaError, match=r"^row 0: column 'aspect_ration' looks like the parameter 'aspect_ratio'"
    ):
        nanobanana_magic.generate_many([{"prompt": "a typo", "aspect_ration": "16:9"}])  # never silently metadata
    assert emulator.submit_count == 0


def test_row_columns_may_use_the_flag_names_and_the_client_refuses_columns_it_cannot_keep(emulator):
    from nanobanana_magic.runtime.batch import as_requests, as_rows

    (row,) = as_rows([{"prompt": "p", "format": "jpeg", "image": "https://example.org/a.png", "label": "x"}])
    assert row.request.output_format == "jpg" and row.request.image_urls == ["https://example.org/a.png"]
    assert row.metadata == {"label": "x"}
    with pytest.raises(NanoBananaError, match="'label' is not a parameter; NanoBananaClient keeps no other columns"):
        as_requests([{"prompt": "p", "label": "x"}])


def test_running_the_same_batch_again_is_cached_for_what_finished_and_attaches_to_what_is_pending(shell, emulator):
    import nanobanana_magic
    from nanobanana_magic.runtime.batch import as_rows
    from nanobanana_magic.session.session import Session

    rows = _table(4).to_dict("records")
    session = _magics(shell).session
    finished = session.generate_many(rows[:2])
    emulator.latency = None  # the other two are paid for, then the kernel "dies" before they end
    pending = [session.submit(row.request, metadata=row.metadata) for row in as_rows(rows[2:])]
    assert not any(g.done for g in pending)
    session.close()  # the kernel dies: nothing polls its tasks any more
    _magics(shell).session = Session(session.settings)  # a restarted kernel: same folder, nothing in memory
    emulator.finish_all()
    again = nanobanana_magic.generate_many(Frame(rows))
    assert emulator.submit_count == 4
    assert [g.cached for g in again] == [True, True, False, False]
    assert [g.resumed for g in again[2:]] == [True, True] and all(g.status == "succeeded" for g in again)
    assert [g.task_id for g in again] == [g.task_id for g in finished + pending]


def test_export_command_writes_an_imagefolder_that_datasets_loads_with_labels(shell, emulator, tmp_path, hf, capsys):
    import nanobanana_magic

    shell.user_ns["rows"] = _table()
    shell.run_cell("gens = __import__('nanobanana_magic').generate_many(rows)")
    shell.run_cell("%%nanobanana\na forbidden extra")  # failed: skipped, with the reason
    dest = tmp_path / "dataset"
    capsys.readouterr()
    assert shell.run_cell(f"%nanobanana export --format imagefolder {dest}").success
    report = f"imagefolder export to {dest}: 6 added, 0 unchanged, 1 skipped (1 failed)"
    assert capsys.readouterr().out.strip() == report
    ds = hf("imagefolder", data_dir=str(dest))
    assert {name: ds[name].num_rows for name in ds} == {"train": 5, "test": 1}
    assert ds["test"][0]["label"] == "apple" and ds["test"][0]["id"] == 1 and ds["test"][0]["aspect_ratio"] == "4:3"
    card = (dest / "README.md").read_text()
    assert f"`{emulator.base_url}/` (6 images)" in card or f"`{emulator.base_url}` (6 images)" in card

    before = _snapshot(dest)
    capsys.readouterr()
    assert shell.run_cell(f"%nanobanana export {dest}").success  # the format of the export already there
    assert "0 added, 6 unchanged" in capsys.readouterr().out
    assert _snapshot(dest) == before
    report = nanobanana_magic.export(str(dest) + "/", format="imagefolder")
    assert (report.added, report.unchanged) == (0, 6) and _snapshot(dest) == before


def test_python_export_writes_webdataset_shards_with_the_metadata(shell, emulator, tmp_path):
    wds = pytest.importorskip("webdataset")
    import nanobanana_magic

    nanobanana_magic.generate_many(_table(3))
    report = nanobanana_magic.export(str(tmp_path / "shards"), format="webdataset")
    assert (report.added, report.format) == (3, "webdataset")
    samples = list(wds.WebDataset(str(tmp_path / "shards" / "shard-000000.tar"), shardshuffle=False).decode("pil"))
    assert sorted(s["json"]["label"] for s in samples) == ["apple", "pear", "pear"]
    assert all(s["png"].size for s in samples)


def test_sweep_variables_are_kept_as_metadata(shell, emulator, tmp_path):
    shell.user_ns["animals"] = ["a fox", "an owl"]
    assert shell.run_cell("%%nanobanana --sweep animal=@animals -o g\n{animal} at night").success
    entries = {e.task_id: e for e in _magics(shell).session.store.entries()}
    assert [entries[g.task_id].metadata for g in shell.user_ns["g"]] == [{"animal": "a fox"}, {"animal": "an owl"}]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", ".md"])
def test_file_exports_carry_the_metadata_columns(shell, emulator, tmp_path, suffix):
    import nanobanana_magic

    nanobanana_magic.generate_many(_table(2))
    path = tmp_path / f"runs{suffix}"
    assert shell.run_cell(f"%nanobanana export {path}").success
    text = path.read_text()
    assert "label" in text and "apple" in text and "pear" in text
    if suffix == ".csv":
        import csv

        rows = list(csv.DictReader(text.splitlines()))
        assert [r["label"] for r in rows] == ["pear", "apple"] and rows[1]["split"] == "test"


@pytest.mark.parametrize(
    "line, message",
    [
        ("%nanobanana export /proc/x.csv", "cannot write the export /proc/x.csv"),
        ("%nanobanana export {tmp}/a-dir.csv", "cannot write the export"),
        ("%nanobanana export {tmp}/dataset", "does not say what to write"),
        ("%nanobanana export --format imagefolder /proc/dataset", "cannot create the export directory /proc/dataset"),
        ("%nanobanana export --format imagefolder {tmp}/a-file.txt", "is a file"),
        ("%nanobanana export --format tarball {tmp}/x", "invalid choice: 'tarball'"),
    ],
)
def test_an_odd_export_path_is_a_one_line_error(shell, emulator, tmp_path, line, message):
    (tmp_path / "a-dir.csv").mkdir()
    (tmp_path / "a-file.txt").write_text("x")
    shell.run_cell("%%nanobanana\nsomething to export")
    result = shell.run_cell(line.format(tmp=tmp_path))
    assert result.error_in_exec is not None
    text = str(result.error_in_exec)
    assert message in text and "\n" not in text.strip()


def test_export_since_keeps_only_the_recent_tasks(shell, emulator, tmp_path, capsys):
    import nanobanana_magic

    nanobanana_magic.generate_many(_table(2))
    capsys.readouterr()
    assert shell.run_cell(f"%nanobanana export --since 2099-01-01 --format imagefolder {tmp_path / 'none'}").success
    assert "0 added, 0 unchanged, 0 skipped" in capsys.readouterr().out
    assert shell.run_cell(f"%nanobanana export --since 1h --format imagefolder {tmp_path / 'recent'}").success
    assert "2 added" in capsys.readouterr().out
    result = shell.run_cell(f"%nanobanana export --since soon {tmp_path / 'x.csv'}")
    assert "--since 'soon' is not a time; use 30m, 2h or 7d ago" in str(result.error_in_exec)
