"""Editing workflows: local files, in-memory images and earlier results as reference images.

Real parts: the emulator (it fetches every reference it is sent and reports how each went), an
S3-compatible server on loopback (moto) reached by s3fs over HTTP, a `file://` folder behind a
local web server, IPython shells, and real kernels through nbclient for the cell flows.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import ipywidgets as W
import pytest
from conftest import API_KEY, shown_as
from kernel_helpers import (
    SETUP,
    execute_notebook,
    kernel_environment,
    new_notebook,
    plain_text,
    task_outputs,
)
from PIL import Image
from s3_server import S3_SECRET
from test_panel import generate, magics_of, wait_until
from traitlets import TraitError

import nanobanana_magic
from nanobanana_magic.core.errors import InvalidRequestError
from nanobanana_magic.notebook.control_panel import Panel, PanelContext
from nanobanana_magic.runtime import references
from nanobanana_magic.runtime.store import Store
from nanobanana_magic.session.session import Session
from nanobanana_magic.session.settings import Settings


def png_bytes(color: str = "red", size: tuple[int, int] = (48, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(shell, cell: str):
    return shell.run_cell(cell)


def last_body(emulator) -> dict:
    return emulator.tasks[list(emulator.tasks)[-1]].body


def api_calls(emulator) -> int:
    """Submits and status polls received (what a cache hit must not make)."""
    return sum(r.phase in ("submit", "poll") for r in emulator.requests)


def submitted_record(shell, task_id: str) -> dict:
    store = magics_of(shell).session.store
    return next(r for r in store.records() if r["task_id"] == task_id and r["event"] == "submitted")


@pytest.fixture
def folder_uploads(shell, http_folder):
    """upload_to: a file:// folder, served over HTTP (upload_public_url)."""
    folder, base_url = http_folder
    magics = magics_of(shell)
    magics.upload_to = folder.as_uri()
    magics.upload_public_url = base_url
    return folder, base_url


@pytest.fixture
def s3_uploads(shell, s3_server, s3_bucket):
    """upload_to: a bucket of the local S3-compatible server; signed URLs."""
    magics = magics_of(shell)
    magics.upload_to = f"s3://{s3_bucket}/refs"
    magics.upload_options = s3_server.options()
    return s3_bucket


@pytest.fixture
def cat_png(tmp_path) -> Path:
    path = tmp_path / "cat.png"  # the shell fixture's working directory
    path.write_bytes(png_bytes("orange"))
    return path


# -- the flag line is expanded by the magic --------------------------------------------------


def test_an_undefined_variable_in_a_flag_is_named_and_nothing_is_sent(shell, emulator):
    shell.user_ns.update(res="2K", ref=emulator.sample_url("cat"))
    result = run(shell, "%%nanobanana -r {res} -i {ref} -a {undefined_ratio}\na cat")
    assert isinstance(result.error_in_exec, InvalidRequestError)
    message = str(result.error_in_exec)
    assert "name 'undefined_ratio' is not defined" in message and "{ref}" not in message
    assert emulator.requests == []


def test_flag_values_take_expressions_from_the_namespace(shell, emulator):
    shell.user_ns.update(res="2k", base=emulator.base_url, n=2, sizes={"wide": "16:9"})
    assert run(
        shell, "%%nanobanana -r {res} -a {sizes['wide']} -i {base}/samples/cat.png --timeout {n * 30}\nx"
    ).success
    body = last_body(emulator)
    assert body["resolution"] == "2K" and body["aspectRatio"] == "16:9"
    assert body["imageUrls"] == [emulator.sample_url("cat")]


def test_an_object_given_as_an_expression_stays_an_object(shell, emulator):
    assert run(shell, "%%nanobanana -o first\na banana").success
    first = shell.user_ns["first"]
    shell.user_ns["chain"] = {"start": first}
    assert run(shell, "%%nanobanana -i {chain['start']} -o second\nthe same banana, peeled").success
    assert shell.user_ns["second"].parents == (first.task_id,)
    assert last_body(emulator)["imageUrls"] == [first.url]


def test_quotes_around_a_value_are_removed(shell, emulator):
    url = emulator.sample_url("cat")
    assert run(shell, f'%%nanobanana -i "{url}" -a \'16:9\'\na cat').success
    body = last_body(emulator)
    assert body["imageUrls"] == [url] and body["aspectRatio"] == "16:9"


@pytest.mark.parametrize(
    "name, why", [("1abc", "not a Python name"), ("my.attr", "not a Python name"), ("class", "keyword")]
)
def test_out_must_be_a_python_name(shell, emulator, name, why):
    result = run(shell, f"%%nanobanana -o {name}\na cat")
    assert isinstance(result.error_in_exec, InvalidRequestError)
    assert why in str(result.error_in_exec) and "\n" not in str(result.error_in_exec)
    assert emulator.requests == []


def test_a_dollar_sign_is_no_longer_expanded_by_ipython(shell, emulator):
    shell.user_ns["price"] = "9"
    assert run(shell, "%%nanobanana --callback-url https://example.org/$price\nx").success
    assert last_body(emulator)["callBackUrl"] == "https://example.org/$price"


# -- earlier results -------------------------------------------------------------------------


def test_editing_a_fresh_result_sends_its_url_and_records_its_parent(shell, emulator):
    assert run(shell, "%%nanobanana -o banana\na banana").success
    banana = shell.user_ns["banana"]
    assert run(shell, "%%nanobanana -i @banana -o peeled\nthe same banana, peeled").success
    peeled = shell.user_ns["peeled"]
    assert last_body(emulator)["imageUrls"] == [banana.url]
    assert emulator.reference_report(peeled.task_id) == [(banana.url, "ok")]
    assert peeled.parents == (banana.task_id,)
    record = submitted_record(shell, peeled.task_id)
    assert record["parents"] == [banana.task_id]
    assert record["references"] == [
        {"source": f"task:{banana.task_id}", "sha256": sha256(banana.path.read_bytes()), "url": banana.url}
    ]


def test_an_older_result_is_uploaded_from_its_saved_file(shell, emulator, folder_uploads):
    folder, base_url = folder_uploads
    magics_of(shell).result_url_ttl = 0  # every result is "old"
    assert run(shell, "%%nanobanana -o banana\na banana").success
    banana = shell.user_ns["banana"]
    assert run(shell, "%%nanobanana -i @banana -o peeled\nthe same banana, peeled").success
    digest = sha256(banana.path.read_bytes())
    sent = f"{base_url}/{digest}.png"
    assert last_body(emulator)["imageUrls"] == [sent]
    assert (folder / f"{digest}.png").read_bytes() == banana.path.read_bytes()
    assert emulator.reference_report(shell.user_ns["peeled"].task_id) == [(sent, "ok")]
    assert shell.user_ns["peeled"].parents == (banana.task_id,)


def test_a_fresh_and_an_uploaded_result_have_the_same_cache_identity(shell, emulator, folder_uploads):
    assert run(shell, "%%nanobanana -o banana\na banana").success
    assert run(shell, "%%nanobanana -i @banana\nthe same banana, peeled").success
    requests_before = len(emulator.requests)
    magics_of(shell).result_url_ttl = 0  # now it would be uploaded: the key is its content either way
    assert run(shell, "%%nanobanana -i @banana -o again\nthe same banana, peeled").success
    assert shell.user_ns["again"].cached and len(emulator.requests) == requests_before


def test_a_pending_result_is_refused_as_a_reference(shell, emulator):
    emulator.latency = None
    assert run(shell, "%%nanobanana --no-wait -o banana\na banana").success
    result = run(shell, "%%nanobanana -i @banana\nthe same banana")
    assert "is still pending; wait for it to finish" in str(result.error_in_exec)
    assert emulator.submit_count == 1
    emulator.finish_all()


# -- local files and in-memory images --------------------------------------------------------


def test_a_local_file_without_upload_to_says_how_to_set_it_and_sends_nothing(shell, emulator, cat_png, capsys):
    result = run(shell, "%%nanobanana -i cat.png\nthe cat, as a banana")
    error = result.error_in_exec
    assert isinstance(error, InvalidRequestError) and error.hint == "upload"
    assert "reference image 'cat.png' must be uploaded (the API takes URLs only)" in str(error)
    shown = capsys.readouterr()
    line = next(x for x in (shown.out + shown.err).splitlines() if "InvalidRequestError" in x)
    assert "%config NanoBananaMagics.upload_to = 's3://bucket/prefix'" in line and "NANOBANANA_UPLOAD_TO" in line
    assert emulator.requests == []


def test_a_missing_upload_extra_names_the_pip_command(shell, emulator, cat_png, monkeypatch):
    import sys

    magics_of(shell).upload_to = "s3://bucket/refs"
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec now raises ImportError
    monkeypatch.setitem(sys.modules, "fsspec.core", None)
    result = run(shell, "%%nanobanana -i cat.png\nthe cat")
    assert 'pip install "nanobanana-magic[upload]"' in str(result.error_in_exec)
    assert "\n" not in str(result.error_in_exec) and emulator.requests == []


def test_a_local_file_goes_to_the_served_folder_and_the_emulator_draws_it(
    shell, emulator, folder_uploads, cat_png, monkeypatch
):
    folder, base_url = folder_uploads
    monkeypatch.setenv("HOME", str(cat_png.parent))
    assert run(shell, f"%%nanobanana -i cat.png -i ~/cat.png -i '{cat_png}' -o g\nthe cat").success
    digest = sha256(cat_png.read_bytes())
    sent = f"{base_url}/{digest}.png"
    generation = shell.user_ns["g"]
    assert generation.request["imageUrls"] == [sent, sent, sent]  # relative, ~ and absolute: one object
    assert emulator.reference_report(generation.task_id) == [(sent, "ok")] * 3
    assert sorted(p.name for p in folder.iterdir()) == [f"{digest}.png"]
    record = submitted_record(shell, generation.task_id)
    assert record["references"][0] == {"source": str(cat_png), "sha256": digest, "url": sent}
    assert "parents" not in record


def test_a_pil_image_and_a_path_in_a_list(shell, emulator, folder_uploads, cat_png):
    image = Image.new("RGB", (20, 20), "green")
    shell.user_ns["refs"] = [image, cat_png, emulator.sample_url("banana")]
    assert run(shell, "%%nanobanana -i @refs -o g\nall three").success
    urls = shell.user_ns["g"].request["imageUrls"]
    assert len(urls) == 3 and urls[2] == emulator.sample_url("banana")
    assert all(status == "ok" for _, status in emulator.reference_report(shell.user_ns["g"].task_id))


def test_fifteen_references_in_all_are_refused(shell, emulator, folder_uploads, cat_png):
    shell.user_ns["refs"] = [cat_png] * 10
    line = "-i @refs " + " ".join(["-i cat.png"] * 5)
    result = run(shell, f"%%nanobanana {line}\nx")
    assert "15 reference images given; the API accepts at most 14" in str(result.error_in_exec)
    assert emulator.requests == [] and list(folder_uploads[0].iterdir()) == []


def test_dry_run_checks_the_references_and_uploads_nothing(shell, emulator, s3_uploads, s3_server, cat_png, capsys):
    assert run(shell, "%%nanobanana --dry-run -i cat.png\nthe cat").success
    shown = capsys.readouterr().out
    digest = sha256(cat_png.read_bytes())
    assert f"<signed URL of s3://{s3_uploads}/refs/{digest}.png, valid 3600 s>" in shown
    assert str(cat_png) in shown and digest[:16] in shown
    assert s3_server.keys(s3_uploads) == [] and emulator.requests == []


# -- the cache, by content (S3: signed URLs) --------------------------------------------------


def test_rerunning_a_cell_with_the_same_local_file_is_a_cache_hit_with_no_api_call(
    shell, emulator, s3_uploads, s3_server, cat_png
):
    cell = "%%nanobanana -i cat.png -o g\nthe cat, as a banana"
    assert run(shell, cell).success
    first = shell.user_ns["g"]
    sent = first.request["imageUrls"][0]
    assert "X-Amz-Signature=" in sent and "X-Amz-Expires=3600" in sent
    assert emulator.reference_report(first.task_id) == [(sent, "ok")]  # the API side fetched the signed URL
    assert s3_server.keys(s3_uploads) == [f"refs/{sha256(cat_png.read_bytes())}.png"]

    magics_of(shell).upload_expiry = 7200  # a new signature would differ in any case
    calls = len(emulator.requests)
    assert run(shell, cell).success
    again = shell.user_ns["g"]
    assert again.cached and again.task_id == first.task_id
    assert len(emulator.requests) == calls  # 0 API calls
    assert emulator.submit_count == 1


def test_a_sweep_uploads_its_references_once_and_reruns_from_the_cache(shell, emulator, s3_uploads, s3_server, cat_png):
    cell = "%%nanobanana -i cat.png --sweep aspect_ratio=1:1,16:9 -o grid\nthe cat"
    assert run(shell, cell).success
    grid = shell.user_ns["grid"]
    assert [g.status for g in grid] == ["succeeded", "succeeded"]
    assert len({g.request["imageUrls"][0].split("?")[0] for g in grid}) == 1
    assert len(s3_server.keys(s3_uploads)) == 1
    calls = api_calls(emulator)
    assert run(shell, cell).success
    assert all(g.cached for g in shell.user_ns["grid"]) and api_calls(emulator) == calls


def test_a_changed_local_file_is_a_new_request(shell, emulator, s3_uploads, s3_server, cat_png):
    assert run(shell, "%%nanobanana -i cat.png\nthe cat").success
    cat_png.write_bytes(png_bytes("black"))
    assert run(shell, "%%nanobanana -i cat.png -o g\nthe cat").success
    assert not shell.user_ns["g"].cached and emulator.submit_count == 2
    assert len(s3_server.keys(s3_uploads)) == 2


def test_signed_urls_and_storage_secrets_never_reach_outputs_or_the_config(
    shell, emulator, s3_uploads, cat_png, capsys
):
    assert run(shell, "%%nanobanana -i cat.png\nthe cat").success
    shell.run_line_magic("nanobanana", "config")
    shell.run_line_magic("config", "NanoBananaMagics")
    shown = capsys.readouterr()
    assert S3_SECRET not in shown.out + shown.err
    assert "X-Amz-Signature" not in shown.out + shown.err
    assert S3_SECRET not in repr(magics_of(shell).session.settings)
    log = (magics_of(shell).session.store.log_path).read_text()
    assert S3_SECRET not in log and API_KEY not in log


# -- provenance ------------------------------------------------------------------------------


def test_history_and_export_show_references_and_parents(shell, emulator, folder_uploads, cat_png, capsys, tmp_path):
    assert run(shell, "%%nanobanana -o banana\na banana").success
    assert run(shell, "%%nanobanana -i @banana -i cat.png -o both\nthe banana and the cat").success
    banana, both = shell.user_ns["banana"], shell.user_ns["both"]
    capsys.readouterr()
    shell.run_line_magic("nanobanana", "history -n 2")
    table = capsys.readouterr().out
    header = table.splitlines()[0]
    assert "refs" in header
    assert f"2 ← {banana.task_id[:8]}" in table

    shell.run_line_magic("nanobanana", f"export {tmp_path / 'gens.json'}")
    shell.run_line_magic("nanobanana", f"export {tmp_path / 'gens.csv'}")
    records = {r["task_id"]: r for r in json.loads((tmp_path / "gens.json").read_text())}
    assert records[both.task_id]["parents"] == [banana.task_id]
    assert [r["source"] for r in records[both.task_id]["references"]] == [f"task:{banana.task_id}", str(cat_png)]
    assert records[banana.task_id]["references"] == [] and records[banana.task_id]["parents"] == []
    csv_text = (tmp_path / "gens.csv").read_text()
    assert f"task:{banana.task_id} sha256:{sha256(banana.path.read_bytes())}" in csv_text
    assert f"{cat_png} sha256:{sha256(cat_png.read_bytes())}" in csv_text


def test_parents_survive_a_cache_hit_and_a_fetch_from_the_run_log(shell, emulator, tmp_path):
    assert run(shell, "%%nanobanana -o banana\na banana").success
    banana = shell.user_ns["banana"]
    assert run(shell, "%%nanobanana -i @banana -o peeled\npeeled").success
    task_id = shell.user_ns["peeled"].task_id
    assert run(shell, "%%nanobanana -i @banana -o again\npeeled").success
    assert shell.user_ns["again"].cached and shell.user_ns["again"].parents == (banana.task_id,)
    # Another kernel on the same output_dir knows the lineage from the run log alone.
    other = Session(Settings(api_key=API_KEY, base_url=emulator.base_url, output_dir=str(tmp_path / "out")))
    try:
        assert other.fetch(task_id).parents == (banana.task_id,)
    finally:
        other.close()


# -- the Python API --------------------------------------------------------------------------


def test_generate_many_rows_carry_their_own_references(shell, emulator, folder_uploads, cat_png):
    [banana] = nanobanana_magic.generate_many(["a banana"])
    rows = [
        {"prompt": "the banana, peeled", "image_urls": [banana]},
        {"prompt": "the cat", "references": str(cat_png)},
        {"prompt": "a plain one"},
    ]
    peeled, cat, plain = nanobanana_magic.generate_many(rows)
    assert peeled.parents == (banana.task_id,) and peeled.request["imageUrls"] == [banana.url]
    assert cat.request["imageUrls"] == [f"{folder_uploads[1]}/{sha256(cat_png.read_bytes())}.png"]
    assert plain.request["imageUrls"] == []
    again = nanobanana_magic.generate_many(rows)
    assert all(g.cached for g in again)


def test_a_bad_reference_in_any_row_sends_nothing(shell, emulator, folder_uploads, cat_png):
    rows = [{"prompt": "fine", "image_urls": [str(cat_png)]}, {"prompt": "bad", "image_urls": ["missing.png"]}]
    with pytest.raises(InvalidRequestError, match=r"^row 1: reference image not found: .*missing\.png"):
        nanobanana_magic.generate_many(rows)
    assert emulator.requests == []


def test_the_client_stays_url_only(client):
    from nanobanana_magic import GenerationRequest

    with pytest.raises(InvalidRequestError, match="not an http"):
        client.generate(GenerationRequest(prompt="x", image_urls=["cat.png"]))


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trait, value, words",
    [
        ("upload_to", "my-bucket/refs", "is not an fsspec URL; use e.g. s3://bucket/prefix"),
        ("upload_public_url", "ftp://example.org/refs", "is not an http(s) URL prefix"),
        ("upload_expiry", 10, "use 60 to 604800 seconds"),
        ("upload_expiry", 8 * 24 * 3600, "use 60 to 604800 seconds"),
        ("result_url_ttl", -1, "use 0 (always upload the saved file) or more seconds"),
        ("upload_options", {1: "x"}, "is not an option name"),
    ],
)
def test_upload_settings_are_validated_with_one_line_messages(shell, trait, value, words):
    magics = magics_of(shell)
    before = getattr(magics, trait)
    with pytest.raises(TraitError) as caught:
        setattr(magics, trait, value)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert getattr(magics, trait) == before


def test_upload_to_comes_from_the_environment(emulator, monkeypatch, tmp_path):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("NANOBANANA_UPLOAD_TO", "s3://from-env/refs")
    monkeypatch.chdir(tmp_path)
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "nanobanana_magic")
        magics = ip.magics_manager.registry["NanoBananaMagics"]
        assert magics.upload_to == "s3://from-env/refs"
        assert magics.session.settings.upload_to == "s3://from-env/refs"
    finally:
        ip.run_line_magic("unload_ext", "nanobanana_magic")
        InteractiveShell.clear_instance()


def test_the_default_result_url_ttl_is_documented(shell):
    magics = magics_of(shell)
    assert magics.result_url_ttl == 300
    assert "Default 300" in type(magics).class_traits()["result_url_ttl"].help


# -- the panel -------------------------------------------------------------------------------


@pytest.fixture
def panel(shell) -> Panel:
    return Panel(PanelContext.of(magics_of(shell)))


def pick(panel: Panel, name: str, data: bytes) -> None:
    """What the browser sends when files are chosen in the FileUpload (its JSON state)."""
    file = {"name": name, "type": "image/png", "size": len(data), "content": memoryview(data), "last_modified": 0}
    panel.references.upload.set_state({"value": [file]})


def escaped(text: str) -> str:
    return text.replace("'", "&#x27;")


def test_the_panel_has_a_file_upload_for_png_jpeg_and_webp(panel):
    upload = panel.references.upload
    assert isinstance(upload, W.FileUpload) and upload.multiple
    assert {".png", ".jpg", ".jpeg", ".webp"} <= set(upload.accept.split(","))


def test_a_picked_file_becomes_a_reference_with_a_thumbnail(panel, shell, emulator, folder_uploads):
    folder, base_url = folder_uploads
    data = png_bytes("purple")
    pick(panel, "my cat.png", data)
    [row] = panel.references.rows
    assert row.kind == "file" and row.text.value == "my cat.png"
    assert row.thumb.layout.display is None
    assert shown_as(row.thumb) in ("jpeg", "png")
    assert panel.references.upload.value == ()
    generation = generate(panel, "the cat, as a banana")
    sent = f"{base_url}/{sha256(data)}.png"
    assert generation.request["imageUrls"] == [sent]
    assert emulator.reference_report(generation.task_id) == [(sent, "ok")]
    kept = Path(submitted_record(shell, generation.task_id)["references"][0]["source"])
    assert kept.parent.name == "references" and kept.read_bytes() == data


def test_a_picked_file_that_is_not_an_image_gets_the_message_of_i(panel, folder_uploads, tmp_path):
    pick(panel, "notes.png", b"just some text, not an image")
    assert panel.references.rows == []
    (tmp_path / "notes.png").write_bytes(b"just some text, not an image")
    with pytest.raises(InvalidRequestError) as caught:
        references.resolve(["notes.png"], cwd=tmp_path, uploader_factory=lambda: None)
    expected = str(caught.value).replace(str(tmp_path / "notes.png"), "notes.png")
    assert escaped(expected) in panel.references.error.value
    assert not list((panel.context.session.store.output_dir / "references").glob("notes*"))


def test_without_upload_to_a_picked_file_is_refused_with_the_hint(panel):
    panel.prompt.widget.value = "a cat"
    pick(panel, "cat.png", png_bytes())
    assert panel.references.rows == []
    assert "upload_to" in panel.references.error.value
    assert "%config NanoBananaMagics.upload_to" in panel.references.error.value


def test_use_as_reference_on_a_result_tile_adds_it_and_generate_records_the_parent(panel, emulator):
    first = generate(panel, "a banana")
    tile = panel._tiles[id(first)]
    assert tile.use_button is not None and tile.use_button.description == "Use as reference"
    tile.use_button.click()
    [row] = panel.references.rows
    assert row.kind == "result" and first.task_id[:12] in row.text.value
    wait_until(lambda: row.thumb.layout.display is None)
    second = generate(panel, "the same banana, peeled")
    assert second.parents == (first.task_id,)
    assert second.request["imageUrls"] == [first.url]


def test_references_in_the_panel_follow_the_limit_of_i(panel, emulator):
    first = generate(panel, "a banana")
    for _ in range(14):
        panel._tiles[id(first)].use_button.click()
    assert panel.references.add.disabled and panel.references.upload.disabled
    panel.references.add_result(first)
    message = "15 reference images given; the API accepts at most 14"
    assert message in panel.references.error.value and panel.generate.disabled
    submits = emulator.submit_count
    panel.generate.click()
    assert emulator.submit_count == submits


def test_a_typed_local_path_row_is_checked_like_i(panel, shell, folder_uploads, cat_png):
    panel.prompt.widget.value = "the cat"
    row = panel.references.add_row("cat.png")
    assert row.problem is None and not panel.generate.disabled
    wait_until(lambda: row.thumb.layout.display is None)
    row.text.value = "nowhere.png"
    assert "reference image not found" in row.error.value and panel.generate.disabled


def test_an_old_result_without_upload_to_is_refused_at_generate(panel, shell, emulator):
    first = generate(panel, "a banana")
    panel.use_as_reference(first)
    magics_of(shell).result_url_ttl = 0
    panel.prompt.widget.value = "the same banana"
    submits = emulator.submit_count
    panel.generate.click()  # checks again: the URL is too old now and nothing can upload the file
    assert panel.generate.disabled and "must be uploaded" in panel.references.rows[0].error.value
    assert emulator.submit_count == submits


def test_copy_as_cell_names_each_reference_as_i_takes_it(panel, shell, emulator, folder_uploads):
    first = generate(panel, "a banana")
    panel.use_as_reference(first)
    pick(panel, "plate.png", png_bytes("blue"))
    panel.references.add_row(emulator.sample_url("cat"))
    line = panel.cell_text().splitlines()[0]
    kept = panel.references.rows[1].source()
    assert f"--image {first.path}" in line and f"--image {kept}" in line
    assert f"--image {emulator.sample_url('cat')}" in line
    panel.prompt.widget.value = "all three"
    second = generate(panel, "all three")
    calls = api_calls(emulator)
    assert run(shell, panel.cell_text() + "\n").success  # the cell is the same request, by content
    assert api_calls(emulator) == calls
    assert second.task_id in {g.task_id for g in magics_of(shell).session.generations.values()}


# -- real kernels ----------------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.timeout(120)
def test_in_a_kernel_an_edit_of_a_result_and_a_local_file_make_a_chain(emulator, tmp_path, http_folder):
    folder, base_url = http_folder
    (tmp_path / "plate.png").write_bytes(png_bytes("blue", (64, 48)))
    notebook = new_notebook(
        SETUP,
        f"%config NanoBananaMagics.upload_to = {folder.as_uri()!r}\n"
        f"%config NanoBananaMagics.upload_public_url = {base_url!r}",
        "%%nanobanana -o g\na banana",
        "%%nanobanana -i @g -o edit\nthe same banana, peeled",
        "%%nanobanana -i @edit -i plate.png -o served\nthe banana on the plate",
        "print(edit.parents == (g.task_id,), served.parents == (edit.task_id,), served.request['imageUrls'])",
        "%nanobanana history -n 3",
    )
    env = kernel_environment(emulator.base_url, tmp_path / "out", API_KEY)
    done = execute_notebook(notebook, tmp_path, env, timeout=60)
    for cell in done.cells[2:5]:
        assert task_outputs(cell), cell.outputs
    printed = plain_text(done.cells[5])
    plate = f"{base_url}/{sha256((tmp_path / 'plate.png').read_bytes())}.png"
    assert printed.startswith("True True") and plate in printed
    served_id = next(t for t, task in emulator.tasks.items() if task.body["prompt"] == "the banana on the plate")
    assert [status for _, status in emulator.reference_report(served_id)] == ["ok", "ok"]
    assert "2 ←" in plain_text(done.cells[6])


@pytest.mark.kernel
@pytest.mark.timeout(120)
def test_in_a_kernel_a_rerun_with_a_local_file_on_s3_makes_no_api_call(emulator, tmp_path, s3_server, s3_bucket):
    (tmp_path / "cat.png").write_bytes(png_bytes("orange"))
    options = s3_server.options()
    cell = "%%nanobanana -i cat.png -o g\nthe cat, as a banana"
    notebook = new_notebook(
        SETUP,
        f"%config NanoBananaMagics.upload_to = 's3://{s3_bucket}/refs'\n"
        f"import nanobanana_magic\nnanobanana_magic.config().upload_options = {options!r}",
        cell,
        "first = g.task_id",
        cell,
        "print(g.cached, g.task_id == first)",
    )
    env = kernel_environment(emulator.base_url, tmp_path / "out", API_KEY)
    done = execute_notebook(notebook, tmp_path, env, timeout=60)
    assert plain_text(done.cells[5]).strip() == "True True"
    assert emulator.submit_count == 1
    assert s3_server.keys(s3_bucket) == [f"refs/{sha256((tmp_path / 'cat.png').read_bytes())}.png"]
    shown = json.dumps([cell.get("outputs", []) for cell in done.cells])
    # The signed URL may appear as what the API received (the request in the output's metadata); no secret does.
    assert API_KEY not in shown and options["secret"] not in shown


def test_the_run_log_keeps_reference_provenance_readable_by_the_store(shell, emulator, folder_uploads, cat_png):
    assert run(shell, "%%nanobanana -i cat.png -o g\nthe cat").success
    entry = Store(magics_of(shell).session.store.output_dir).entry(shell.user_ns["g"].task_id)
    assert entry is not None and entry.references[0]["sha256"] == sha256(cat_png.read_bytes())
