"""Research workflows: batches, sweeps with a grid, provenance export and verification."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import API_KEY

from nanobanana_magic import GenerationRequest, NanoBananaClient
from nanobanana_magic.core.errors import InvalidRequestError, NanoBananaError


def magics_of(shell):
    return shell.magics_manager.registry["NanoBananaMagics"]


def test_generate_many_returns_generations_in_input_order(emulator):
    client = NanoBananaClient(api_key=API_KEY, base_url=emulator.base_url, backoff=0.01)
    prompts = [f"batch item {n}" for n in range(6)]
    requests = [GenerationRequest(prompt=p) for p in prompts[:3]] + [{"prompt": p} for p in prompts[3:5]] + prompts[5:]
    results = client.generate_many(requests, concurrency=2)
    assert [g.request["prompt"] for g in results] == prompts
    assert all(g.status == "succeeded" for g in results)
    client.close()


def test_batch_never_has_more_than_concurrency_tasks_pending(shell, emulator):
    import nanobanana_magic

    peak = []
    original = magics_of(shell).session.submit

    def submit(request, **kwargs):
        peak.append(len(magics_of(shell).session.pending()) + 1)
        return original(request, **kwargs)

    magics_of(shell).session.submit = submit
    results = nanobanana_magic.generate_many([f"bounded {n}" for n in range(8)], concurrency=3)
    assert len(results) == 8 and all(g.status == "succeeded" for g in results)
    assert max(peak) <= 3


def test_rate_limits_slow_a_batch_down_instead_of_failing_it(shell, emulator, monkeypatch):
    monkeypatch.setattr("nanobanana_magic.runtime.batch.time.sleep", lambda s: None)
    emulator.inject("submit", "status", count=6, status=429, style="http")
    magics_of(shell).retries = 1
    results = magics_of(shell).session.generate_many(["slowed 1", "slowed 2"], concurrency=2)
    assert [g.status for g in results] == ["succeeded", "succeeded"]


def test_refused_request_in_a_batch_becomes_a_failed_generation(shell, emulator):
    emulator.inject("submit", "status", status=422, style="json")
    results = magics_of(shell).session.generate_many(["refused", "accepted"], concurrency=1)
    assert results[0].status == "failed" and "422" in results[0].error
    assert results[1].status == "succeeded"


def test_text_progress_bar_shows_done_failed_pending(shell, emulator, capsys):
    import nanobanana_magic

    nanobanana_magic.generate_many(["p1", "a forbidden p2"], concurrency=2)
    out = capsys.readouterr().out
    assert "2/2 · 1 done · 1 failed · 0 pending" in out


def test_sweep_renders_a_labelled_grid_of_every_combination(shell, emulator, capsys):
    shell.user_ns["subjects"] = ["a cat", "a dog", "a banana"]
    result = shell.run_cell(
        "%%nanobanana --sweep aspect_ratio=1:1,16:9 --sweep resolution=1K,2K "
        "--sweep subject=@subjects -o grid\n{subject} wearing a hat"
    )
    assert result.success
    grid = shell.user_ns["grid"]
    assert len(grid) == 12 and all(g.status == "succeeded" for g in grid)
    assert emulator.submit_count == 12
    bodies = sorted((g.request["aspectRatio"], g.request["resolution"], g.request["prompt"]) for g in grid)
    assert bodies[0] == ("16:9", "1K", "a banana wearing a hat")
    out = capsys.readouterr().out
    assert "sweep: aspect_ratio (2) × resolution (2) × subject (3) = 12" in out
    assert "aspect_ratio=16:9, resolution=2K, subject=a dog: succeeded" in out


def test_sweep_grid_html_labels_rows_and_columns():
    from nanobanana_magic.core.render import grid_html, grid_shape
    from nanobanana_magic.runtime.generation import Generation

    axes = [("aspect_ratio", ["1:1", "16:9"]), ("resolution", ["1K", "2K"]), ("subject", ["cat", "dog", "fox"])]
    columns, rows = grid_shape(axes, 12)
    assert len(rows) == 4 and columns == ["subject=cat", "subject=dog", "subject=fox"]
    cells = [Generation("t0", {"prompt": "cat"})] + [None] * 11
    page = grid_html(axes, cells, {})
    assert "subject=cat" in page and "aspect_ratio=1:1<br>resolution=1K" in page and "0 of 12 succeeded" in page


def test_sweep_dry_run_lists_requests_count_and_cost(shell, emulator, capsys):
    magics_of(shell).credit_costs = {"1K": 4, "2K": 6, "4K": 12}
    assert shell.run_cell(
        "%%nanobanana --dry-run --sweep resolution=1K,4K --sweep style=ink,oil\na {style} fox"
    ).success
    out = capsys.readouterr().out
    assert "4 requests; nothing sent; they would cost 32 credits" in out
    assert "a oil fox" in out and emulator.requests == []


@pytest.mark.parametrize(
    "sweep, message",
    [
        ("resolution=1K,8K", "resolution '8K' is not supported"),
        ("subject=@missing", "'missing' is not a list"),
        ("novalues=", "--sweep takes NAME=V1,V2"),
        ("bad-name!=1,2", "nor a variable of the prompt"),
    ],
)
def test_bad_sweeps_are_one_line_errors_that_send_nothing(shell, emulator, sweep, message):
    result = shell.run_cell(f"%%nanobanana --sweep {sweep}\nx {{subject}}")
    assert isinstance(result.error_in_exec, InvalidRequestError) and message in str(result.error_in_exec)
    assert emulator.requests == []


def test_sweep_accepts_flag_names(shell, emulator):
    assert shell.run_cell("%%nanobanana --sweep format=png,jpeg -o g\nformats").success
    assert sorted(g.request["outputFormat"] for g in shell.user_ns["g"]) == ["jpg", "png"]


@pytest.fixture
def three_runs(shell, emulator):
    shell.run_cell("%%nanobanana -o a\nprovenance one")
    shell.run_cell("%%nanobanana -r 2K -o b\nprovenance two")
    shell.run_cell("%%nanobanana -o c\na forbidden three")
    return shell


@pytest.mark.parametrize("fmt", ["json", "csv", "markdown"])
def test_history_formats_carry_the_full_request(three_runs, capsys, fmt):
    capsys.readouterr()
    three_runs.run_cell(f"%nanobanana history --format {fmt}")
    out = capsys.readouterr().out
    assert "provenance two" in out and three_runs.user_ns["b"].task_id in out
    if fmt == "json":
        records = json.loads(out)
        assert records[0]["status"] == "failed" and records[1]["request"]["resolution"] == "2K"
        assert len(records[1]["sha256"]) == 64


def test_history_binds_records_and_filters_by_since(three_runs):
    three_runs.run_cell("%nanobanana history --since 1h -o recent")
    assert len(three_runs.user_ns["recent"]) == 3
    three_runs.run_cell("%nanobanana history --since 2099-01-01 -o none")
    assert three_runs.user_ns["none"] == []
    result = three_runs.run_cell("%nanobanana history --since yesterday-ish")
    assert "is not a time" in str(result.error_in_exec)


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".md"])
def test_export_writes_every_generation(three_runs, tmp_path, suffix):
    path = tmp_path / f"provenance{suffix}"
    assert three_runs.run_cell(f"%nanobanana export {path}").success
    text = path.read_text()
    for name in ("a", "b", "c"):
        assert three_runs.user_ns[name].task_id in text
    if suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        assert {r["status"] for r in rows} == {"succeeded", "failed"} and rows[0]["sha256"]
    assert API_KEY not in text


def test_verify_reports_missing_and_altered_files(three_runs, capsys):
    assert three_runs.run_cell("%nanobanana verify").success
    assert "2 of 2 saved images match the run log" in capsys.readouterr().out
    Path(three_runs.user_ns["a"].path).unlink()
    with open(three_runs.user_ns["b"].path, "ab") as handle:
        handle.write(b"tampered")
    result = three_runs.run_cell("%nanobanana verify")
    assert isinstance(result.error_in_exec, NanoBananaError)
    out = capsys.readouterr().out
    assert "missing" in out and "altered" in out and "0 of 2" in out


def test_interrupting_a_batch_stops_submitting_but_keeps_the_submitted_tasks(shell, emulator):
    from nanobanana_magic.runtime.batch import run_batch

    session = magics_of(shell).session
    emulator.latency = None
    calls = []

    def submit(request):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(request)
        return session.submit(request)

    with pytest.raises(KeyboardInterrupt):
        run_batch([GenerationRequest(prompt=f"interrupted {n}") for n in range(5)], submit, concurrency=5)
    assert emulator.submit_count == 2
    pending = session.pending()
    assert len(pending) == 2 and all(session.store.entry(g.task_id).pending for g in pending)
    emulator.finish_all()
    assert all(g.wait(10).status == "succeeded" for g in pending)  # still polled after the interrupt
