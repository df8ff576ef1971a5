"""The magics in a real (terminal) IPython shell against the emulator: every flag and command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import API_KEY
from traitlets.config import Config

from nanobanana_magic.core.errors import AuthenticationError, InvalidRequestError, TaskFailedError, TaskTimeoutError
from nanobanana_magic.core.hints import with_hint


def magics_of(shell):
    return shell.magics_manager.registry["NanoBananaMagics"]


def run(shell, cell: str):
    return shell.run_cell(cell)


def last_body(emulator) -> dict:
    return list(emulator.tasks.values())[-1].body


def run_log(shell) -> list[dict]:
    path = Path(magics_of(shell).output_dir) / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cell_generates_saves_and_binds_the_generation(shell, emulator, capsys):
    shell.user_ns["city"] = "Lisbon"
    result = run(shell, "%%nanobanana -a 16:9 -r 2K -o lisbon\n  a watercolour map of {city} at dusk  \n")
    assert result.success
    generation = shell.user_ns["lisbon"]
    assert generation.status == "succeeded" and generation.path.exists()
    assert generation.request["prompt"] == "a watercolour map of Lisbon at dusk"
    assert generation.image.size == (2736, 1536)
    out = capsys.readouterr().out
    assert '"a watercolour map of Lisbon at dusk" · 2K · 16:9 · png' in out
    assert f"task {generation.task_id}" in out


def test_run_log_gets_the_task_id_before_the_outcome(shell, emulator):
    run(shell, "%%nanobanana -o g\nan apple")
    events = [(r["event"], r["task_id"]) for r in run_log(shell)]
    task_id = shell.user_ns["g"].task_id
    assert events == [("submitted", task_id), ("finished", task_id)]
    finished = run_log(shell)[-1]
    assert finished["status"] == "succeeded" and len(finished["sha256"]) == 64 and finished["url"]


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("-a 9:16", {"aspectRatio": "9:16"}),
        ("--aspect-ratio 21:9", {"aspectRatio": "21:9"}),
        ("-r 2k", {"resolution": "2K"}),
        ("--resolution 4K", {"resolution": "4K"}),
        ("-f jpeg", {"outputFormat": "jpg"}),
        ("--format png", {"outputFormat": "png"}),
        ("-g", {"googleSearch": True}),
        ("--google-search", {"googleSearch": True}),
        ("--no-google-search", {"googleSearch": False}),
        ("--callback-url https://example.org/hook", {"callBackUrl": "https://example.org/hook"}),
    ],
)
def test_each_flag_reaches_the_request_body(shell, emulator, flags, expected):
    assert run(shell, f"%%nanobanana {flags}\nflag test {flags}").success
    body = last_body(emulator)
    for key, value in expected.items():
        assert body[key] == value
    assert ("callBackUrl" in body) == ("callback" in flags)


def test_reference_images_are_repeatable(shell, emulator):
    banana, cat = emulator.sample_url("banana"), emulator.sample_url("cat")
    assert run(shell, f"%%nanobanana -i {banana} --image {cat}\nthe two, together").success
    assert last_body(emulator)["imageUrls"] == [banana, cat]


def test_flags_fall_back_to_the_configuration(shell, emulator):
    run(shell, "%config NanoBananaMagics.resolution = '2k'")
    run(shell, "%config NanoBananaMagics.output_format = 'jpeg'")
    run(shell, "%config NanoBananaMagics.google_search = True")
    assert run(shell, "%%nanobanana\nconfigured").success
    body = last_body(emulator)
    assert (body["resolution"], body["outputFormat"], body["googleSearch"]) == ("2K", "jpg", True)
    assert run(shell, "%%nanobanana -r 1K\nflag wins").success
    assert last_body(emulator)["resolution"] == "1K"


def test_invalid_config_value_fails_its_cell_with_the_allowed_values(shell):
    result = run(shell, "%config NanoBananaMagics.aspect_ratio = '7:3'")
    assert isinstance(result.error_in_exec, InvalidRequestError)
    assert "aspect ratio '7:3' is not supported; use one of 1:1" in str(result.error_in_exec)
    assert magics_of(shell).aspect_ratio == "auto"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("timeout = -1", "timeout -1 is not allowed; use a number of seconds above 0"),
        ("timeout = 0", "timeout 0 is not allowed"),
        ("poll_schedule = [[60, 0]]", "every_s must be at least 0.1 s"),
        ("credit_costs = {'8K': 'a lot'}", "credit_costs key '8K' is not a resolution; use 1K 2K 4K"),
        ("credit_costs = {'2K': 'a lot'}", "is not a number of credits"),
        ("workers = 0", "workers 0 is not allowed; use 1 to 32 (default 2)"),
        ("retries = 99", "retries 99 is not allowed; use 0 to 20 (default 4)"),
        ("workers = 'x'", "workers must be an int, not the str 'x'"),
        ("max_requests_per_second = 0", "use 0.1 to"),
        ("max_credits = -3", "max_credits -3 is not allowed"),
    ],
)
def test_every_bad_setting_fails_its_cell_in_one_line_and_keeps_the_old_value(shell, line, says):
    name = line.split(" ")[0]
    before = getattr(magics_of(shell), name)
    result = run(shell, f"%config NanoBananaMagics.{line}")
    assert isinstance(result.error_in_exec, InvalidRequestError) and says in str(result.error_in_exec)
    assert "\n" not in str(result.error_in_exec) and "trait of a" not in str(result.error_in_exec)
    assert getattr(magics_of(shell), name) == before


@pytest.mark.parametrize("flags", ["--timeout -5", "--timeout 0", "-c 0 --sweep resolution=1K,2K"])
def test_bad_per_cell_values_are_refused_before_anything_is_sent(shell, emulator, flags):
    result = run(shell, f"%%nanobanana {flags}\na cat")
    assert isinstance(result.error_in_exec, InvalidRequestError)
    assert emulator.requests == []


def test_a_local_callback_url_is_refused_when_the_api_is_public(shell, emulator):
    magics_of(shell).base_url = "https://api.nanobananaapi.ai"
    result = run(shell, "%%nanobanana --callback-url http://localhost:8000/hook\na cat")
    assert isinstance(result.error_in_exec, InvalidRequestError) and "not reachable" in str(result.error_in_exec)


@pytest.mark.parametrize(
    "cell, message",
    [
        ("%%nanobanana -a 7:3\nx", "aspect ratio '7:3' is not supported; use one of 1:1"),
        ("%%nanobanana -r 8K\nx", "resolution '8K' is not supported; use one of 1K 2K 4K"),
        ("%%nanobanana -f gif\nx", "output format 'gif' is not supported; use one of png jpg"),
        (
            "%%nanobanana " + " ".join(f"-i https://e.org/{n}.png" for n in range(15)) + "\nx",
            "15 reference images given; the API accepts at most 14",
        ),
        ("%%nanobanana -i file:///etc/passwd\nx", "is not an http(s) URL"),
        ("%%nanobanana --callback-url ftp://x\nx", "callback URL 'ftp://x' is not an http(s) URL"),
        ("%%nanobanana\n{citty}", "name 'citty' is not defined in the prompt; use {{ }} for literal braces, or --raw"),
        ('%%nanobanana\nJSON {"a": 1}', "not a Python expression"),
        ("%%nanobanana\n" + "a" * 20_001, "prompt is 20,001 characters"),
    ],
)
def test_bad_input_is_one_line_and_sends_nothing(shell, emulator, capsys, cell, message):
    result = run(shell, cell)
    assert not result.success and isinstance(result.error_in_exec, InvalidRequestError)
    assert message in str(result.error_in_exec)
    printed = capsys.readouterr()
    error_lines = [line for line in (printed.out + printed.err).splitlines() if "InvalidRequestError" in line]
    assert len(error_lines) == 1 and "Traceback" not in printed.out + printed.err
    assert emulator.requests == []


def test_unknown_flag_is_a_usage_error(shell, emulator):
    result = run(shell, "%%nanobanana --size big\nx")
    assert not result.success and "unrecognized arguments: --size big" in str(result.error_in_exec)
    assert emulator.requests == []


def test_raw_turns_interpolation_off(shell, emulator):
    assert run(shell, '%%nanobanana --raw\n  JSON {"a": 1} and {undefined}  ').success
    assert last_body(emulator)["prompt"] == 'JSON {"a": 1} and {undefined}'


def test_literal_braces(shell, emulator):
    assert run(shell, "%%nanobanana\n{{not a variable}}").success
    assert last_body(emulator)["prompt"] == "{not a variable}"


def test_dry_run_shows_the_body_with_the_key_masked_and_sends_nothing(shell, emulator, capsys):
    assert run(shell, "%%nanobanana --dry-run -r 4k -i https://e.org/a.png\nhello").success
    out = capsys.readouterr().out
    assert "dry run: nothing sent" in out and '"resolution": "4K"' in out and '"imageUrls": [' in out
    assert API_KEY not in out and "Bearer sk-…" in out
    assert emulator.requests == []


def test_cache_answers_an_equal_request_without_any_api_call(shell, emulator, capsys):
    run(shell, "%%nanobanana -r 2K -o first\na cached apple")
    calls = len(emulator.requests)
    assert run(shell, "%%nanobanana -r 2k -o second\n  a cached apple").success
    assert len(emulator.requests) == calls
    second = shell.user_ns["second"]
    assert second.cached and second.task_id == shell.user_ns["first"].task_id and second.image is not None
    assert "cached · first generated" in capsys.readouterr().out


def test_force_skips_the_cache(shell, emulator):
    run(shell, "%%nanobanana\nforced apple")
    run(shell, "%%nanobanana --force\nforced apple")
    assert emulator.submit_count == 2


def test_cache_off_submits_again(shell, emulator):
    run(shell, "%config NanoBananaMagics.cache = False")
    run(shell, "%%nanobanana\nuncached apple")
    run(shell, "%%nanobanana\nuncached apple")
    assert emulator.submit_count == 2


def test_failed_task_is_a_one_line_task_failed_error(shell, emulator, capsys):
    result = run(shell, "%%nanobanana -o bad\na forbidden subject")
    assert isinstance(result.error_in_exec, TaskFailedError)
    assert "flagged by content policy (GENERATE_FAILED, code 400)" in str(result.error_in_exec)
    assert shell.user_ns["bad"].status == "failed"
    assert run_log(shell)[-1]["status"] == "failed"


def test_timeout_gives_up_waiting_but_keeps_the_task_pending(shell, emulator):
    emulator.never_finish_next()
    result = run(shell, "%%nanobanana --timeout 0.3 -o slow\nnever done")
    assert isinstance(result.error_in_exec, TaskTimeoutError)
    assert "%nanobanana fetch" in with_hint(result.error_in_exec)
    entry = magics_of(shell).session.store.entry(shell.user_ns["slow"].task_id)
    assert entry.pending


def test_no_wait_in_a_terminal_returns_at_once(shell, emulator, capsys):
    emulator.latency = None
    assert run(shell, "%%nanobanana --no-wait -o later\nlater").success
    generation = shell.user_ns["later"]
    assert not generation.done and "%nanobanana wait" in capsys.readouterr().out
    emulator.finish(generation.task_id)
    assert run(shell, f"%nanobanana wait {generation.task_id}").success
    assert generation.status == "succeeded"


def test_wait_without_ids_waits_for_every_pending_task(shell, emulator, capsys):
    emulator.latency = None
    for n in range(3):
        run(shell, f"%%nanobanana --no-wait\npending {n}")
    emulator.finish_all()
    run(shell, "%nanobanana wait --timeout 10")
    assert "3 done, 0 pending, 0 failed" in capsys.readouterr().out


def test_missing_key_says_how_to_set_one(shell, emulator):
    magics_of(shell).api_key = None
    result = run(shell, "%%nanobanana\nx")
    assert isinstance(result.error_in_exec, AuthenticationError)
    shown = with_hint(result.error_in_exec)
    assert "NANOBANANA_API_KEY" in shown and "%nanobanana login" in shown
    assert emulator.requests == []


def test_status_shows_one_record_info(shell, emulator, capsys):
    run(shell, "%%nanobanana -o g\nstatus apple")
    capsys.readouterr()
    run(shell, f"%nanobanana status {shell.user_ns['g'].task_id}")
    out = capsys.readouterr().out
    assert "succeeded (successFlag 1, SUCCESS)" in out and "result URL" in out


def test_fetch_from_the_local_store_makes_no_api_call(shell, emulator):
    run(shell, "%%nanobanana -o g\nfetch apple")
    calls = len(emulator.requests)
    assert run(shell, f"%nanobanana fetch {shell.user_ns['g'].task_id} -o again").success
    assert shell.user_ns["again"].path == shell.user_ns["g"].path
    assert len(emulator.requests) == calls


def test_fetch_recovers_a_task_from_the_api_without_submitting(shell, emulator, client):
    task_id = client.submit(__import__("nanobanana_magic").GenerationRequest(prompt="made elsewhere"))
    submits = emulator.submit_count
    assert run(shell, f"%nanobanana fetch {task_id} -o recovered --wait").success
    recovered = shell.user_ns["recovered"]
    assert recovered.status == "succeeded" and recovered.request["prompt"] == "made elsewhere"
    assert emulator.submit_count == submits
    assert magics_of(shell).session.store.entry(task_id).file


def test_history_lists_newest_first_with_pending_marked(shell, emulator, capsys):
    run(shell, "%%nanobanana\nfirst in history")
    emulator.never_finish_next()
    run(shell, "%%nanobanana --no-wait -o p\nstill running")
    capsys.readouterr()
    run(shell, "%nanobanana history -n 5")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["when", "status", "task", "id", "res", "ratio", "prompt", "refs", "file"]
    assert "pending" in lines[1] and shell.user_ns["p"].task_id in lines[1]
    assert "succeeded" in lines[2] and ".png" in lines[2]


def test_cancel_stops_polling_but_keeps_the_history(shell, emulator, capsys):
    emulator.never_finish_next()
    run(shell, "%%nanobanana --no-wait -o p\ncancel me")
    run(shell, "%nanobanana cancel all")
    assert shell.user_ns["p"].status == "cancelled"
    assert magics_of(shell).session.store.entry(shell.user_ns["p"].task_id).pending
    assert "stopped polling 1 task(s)" in capsys.readouterr().out


def test_credits(shell, emulator, capsys):
    emulator.credits = 123
    run(shell, "%nanobanana credits")
    assert "credits: 123" in capsys.readouterr().out


def test_config_shows_effective_values_with_the_key_masked(shell, capsys):
    run(shell, "%nanobanana config")
    out = capsys.readouterr().out
    assert API_KEY not in out and f"{API_KEY[:3]}…{API_KEY[-4:]}" in out
    for name in ("base_url", "output_dir", "aspect_ratio", "resolution", "wait", "timeout", "cache", "preview_max_px"):
        assert name in out


def test_percent_config_never_shows_the_key(shell, capsys):
    run(shell, "%config NanoBananaMagics")
    run(shell, "%config NanoBananaMagics.api_key")
    printed = capsys.readouterr()
    assert API_KEY not in printed.out + printed.err


def test_login_keeps_the_key_for_the_session(shell, emulator, monkeypatch, capsys):
    magics_of(shell).api_key = None
    monkeypatch.setattr("getpass.getpass", lambda prompt="": API_KEY)
    run(shell, "%nanobanana login")
    assert magics_of(shell).api_key.reveal() == API_KEY
    assert API_KEY not in capsys.readouterr().out
    assert run(shell, "%nanobanana credits").success


def test_help_lists_every_command_and_flag(shell, capsys):
    run(shell, "%nanobanana help")
    out = capsys.readouterr().out
    for word in (
        "help",
        "panel",
        "wait",
        "status",
        "fetch",
        "history",
        "cancel",
        "credits",
        "config",
        "login",
        "emulator",
        "--aspect-ratio",
        "--resolution",
        "--format",
        "--image",
        "--google-search",
        "--callback-url",
        "--out",
        "--no-wait",
        "--timeout",
        "--force",
        "--raw",
        "--dry-run",
    ):
        assert word in out


def test_cell_help_flag(shell, capsys):
    run(shell, "%%nanobanana --help\nignored")
    assert "usage: %%nanobanana" in capsys.readouterr().out


def test_unknown_command_names_the_known_ones(shell):
    result = run(shell, "%nanobanana frobnicate")
    assert "unknown command 'frobnicate'; use one of help panel wait" in str(result.error_in_exec)


def test_short_errors_off_shows_the_traceback(shell, capsys):
    run(shell, "%config NanoBananaMagics.short_errors = False")
    run(shell, "%%nanobanana -a 7:3\nx")
    assert "Traceback" in capsys.readouterr().out


def test_other_exceptions_keep_their_normal_traceback(shell, capsys):
    run(shell, "1/0")
    assert "Traceback" in capsys.readouterr().out


def test_emulator_command_starts_points_and_stops(shell, capsys):
    magics = magics_of(shell)
    before = magics.base_url
    run(shell, "%nanobanana emulator start --latency 0.1")
    assert magics.base_url != before and magics.base_url.startswith("http://127.0.0.1:")
    assert run(shell, "%%nanobanana\nfrom the started emulator").success
    run(shell, "%nanobanana emulator status")
    run(shell, "%nanobanana emulator stop")
    assert magics.base_url == before
    assert "running at" in capsys.readouterr().out


def test_unload_stops_the_poller_threads(shell, emulator):
    import threading

    run(shell, "%%nanobanana\nthreads")
    assert any(t.name.startswith("nanobanana-") for t in threading.enumerate())
    poller = magics_of(shell).session.poller
    shell.run_line_magic("unload_ext", "nanobanana_magic")
    for thread in poller._threads:
        thread.join(5)
    assert not poller.running
    shell.run_line_magic("load_ext", "nanobanana_magic")  # for the fixture's teardown


def test_configuration_precedence(emulator, monkeypatch, tmp_path):
    from IPython.core.interactiveshell import InteractiveShell

    from nanobanana_magic.notebook.magics import NanoBananaMagics

    config = Config()
    config.NanoBananaMagics.base_url = "http://from-config"
    config.NanoBananaMagics.output_dir = "from-config"
    config.NanoBananaMagics.resolution = "2K"
    monkeypatch.setenv("NANOBANANA_BASE_URL", "http://from-env")
    monkeypatch.delenv("NANOBANANA_OUTPUT_DIR", raising=False)
    shell = InteractiveShell.instance()
    try:
        magics = NanoBananaMagics(shell=shell, config=config)
        assert magics.base_url == "http://from-env"  # env beats ipython_config
        assert magics.output_dir == "from-config"  # config beats the default
        assert magics.resolution == "2K"
        magics.base_url = "http://from-percent-config"  # %config beats env
        assert magics.base_url == "http://from-percent-config"
        magics.close()
    finally:
        InteractiveShell.clear_instance()
