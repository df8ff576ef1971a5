"""Uploader: reference images stored once per sha256, against a real S3 protocol server (moto
on loopback, s3fs over HTTP) and a file:// folder behind a real HTTP server."""

from __future__ import annotations

import hashlib
import socket
import sys
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from s3_server import S3_KEY, S3_SECRET

from nanobanana_magic.core.errors import InvalidRequestError, NanoBananaError
from nanobanana_magic.runtime.uploads import UPLOAD_EXTRA_HINT, Uploader

PNG = b"\x89PNG\r\n\x1a\n" + b"test image bytes" * 8


def assert_one_clean_line(message: str) -> None:
    assert "\n" not in message
    for secret in (S3_KEY, S3_SECRET, "Signature", "X-Amz-"):
        assert secret not in message


# --- S3 (moto server, real HTTP) -------------------------------------------------------------


def test_object_is_named_by_sha256_under_the_prefix(s3_server, s3_bucket):
    uploader = Uploader(f"s3://{s3_bucket}/refs/run1", s3_server.options())
    uploader.url_for(PNG, ".png")
    assert s3_server.keys(s3_bucket) == [f"refs/run1/{hashlib.sha256(PNG).hexdigest()}.png"]


def test_same_bytes_twice_upload_once(s3_server, s3_bucket):
    uploader = Uploader(f"s3://{s3_bucket}/p", s3_server.options())
    uploader.url_for(PNG, ".png")
    uploader.url_for(PNG, ".png")
    assert (uploader.uploaded, uploader.skipped) == (1, 1)
    assert len(s3_server.keys(s3_bucket)) == 1


def test_bytes_stored_by_another_uploader_are_not_uploaded_again(s3_server, s3_bucket):
    Uploader(f"s3://{s3_bucket}/p", s3_server.options()).url_for(PNG, ".png")
    second = Uploader(f"s3://{s3_bucket}/p", s3_server.options())
    second.url_for(PNG, ".png")
    assert (second.uploaded, second.skipped) == (0, 1)


def test_signed_url_downloads_the_bytes_with_plain_requests(s3_server, s3_bucket):
    url = Uploader(f"s3://{s3_bucket}/p", s3_server.options()).url_for(PNG, ".png")
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.content == PNG
    assert answer.headers["Content-Type"] == "image/png"


def test_signed_url_carries_the_expiry(s3_server, s3_bucket):
    url = Uploader(f"s3://{s3_bucket}/p", s3_server.options(), expiry=900).url_for(PNG, ".png")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]


def test_public_url_is_the_prefix_and_the_name_unsigned(s3_server, s3_bucket):
    s3_server.client().put_bucket_acl(Bucket=s3_bucket, ACL="public-read")
    public = f"{s3_server.endpoint_url}/{s3_bucket}/p/"
    url = Uploader(f"s3://{s3_bucket}/p", s3_server.options(), public_url=public).url_for(PNG, ".png")
    assert url == public + hashlib.sha256(PNG).hexdigest() + ".png"
    assert requests.get(url, timeout=10).content == PNG


def test_threads_uploading_the_same_bytes_upload_once(s3_server, s3_bucket):
    uploader = Uploader(f"s3://{s3_bucket}/p", s3_server.options())
    start = threading.Barrier(6)
    urls: list[str] = []

    def work() -> None:
        start.wait()
        urls.append(uploader.url_for(PNG, ".png"))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(urls) == 6
    assert (uploader.uploaded, uploader.skipped) == (1, 5)


def test_threads_uploading_different_bytes_all_upload(s3_server, s3_bucket):
    uploader = Uploader(f"s3://{s3_bucket}/p", s3_server.options())
    images = [PNG + bytes([n]) for n in range(6)]
    threads = [threading.Thread(target=uploader.url_for, args=(data, ".png")) for data in images]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert uploader.uploaded == 6
    assert len(s3_server.keys(s3_bucket)) == 6


def test_expiry_longer_than_sigv4_allows_is_refused(s3_server, s3_bucket):
    with pytest.raises(InvalidRequestError, match="at most 604800 s"):
        Uploader(f"s3://{s3_bucket}/p", s3_server.options(), expiry=8 * 24 * 3600)


# --- storage errors: one line, no credentials, no signature ---------------------------------


def test_missing_bucket_is_a_one_line_error(s3_server):
    uploader = Uploader("s3://no-such-bucket-here/p", s3_server.options())
    with pytest.raises(NanoBananaError, match="bucket or folder does not exist") as caught:
        uploader.url_for(PNG, ".png")
    assert_one_clean_line(str(caught.value))
    assert uploader.uploaded == 0


def test_refused_credentials_are_access_denied_without_the_credentials(s3_server, s3_bucket, monkeypatch):
    import moto.settings

    # From now on the in-process moto server checks signatures against its IAM users: the
    # run's dummy key is unknown to it.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    uploader = Uploader(f"s3://{s3_bucket}/p", s3_server.options())
    with pytest.raises(NanoBananaError, match="access denied") as caught:
        uploader.url_for(PNG, ".png")
    assert_one_clean_line(str(caught.value))


def test_no_credentials_says_where_to_set_them(s3_server, s3_bucket, monkeypatch, tmp_path):
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe
    options = {k: v for k, v in s3_server.options().items() if k not in ("key", "secret")}
    with pytest.raises(NanoBananaError, match="no credentials found; set them in AWS_ACCESS_KEY_ID"):
        Uploader(f"s3://{s3_bucket}/p", options).url_for(PNG, ".png")


def test_unreachable_endpoint_is_a_one_line_error(s3_bucket):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "key": S3_KEY,
        "secret": S3_SECRET,
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }
    with pytest.raises(NanoBananaError, match="cannot reach the storage service") as caught:
        Uploader(f"s3://{s3_bucket}/p", options).url_for(PNG, ".png")
    assert_one_clean_line(str(caught.value))


def test_a_library_message_quoting_secrets_or_a_signed_url_is_cleaned(s3_server, s3_bucket, monkeypatch):
    uploader = Uploader(f"s3://{s3_bucket}/p", s3_server.options())
    signed = Uploader(f"s3://{s3_bucket}/p", s3_server.options()).url_for(PNG, ".png")
    signature = parse_qs(urlsplit(signed).query)["X-Amz-Signature"][0]

    def leaky_info(path: str) -> dict:
        raise RuntimeError(f"boom for {S3_KEY}:{S3_SECRET}\nat {signed}\nsignature {signature}")

    monkeypatch.setattr(uploader._fs, "info", leaky_info)
    with pytest.raises(NanoBananaError) as caught:
        uploader.url_for(PNG, ".png")
    message = str(caught.value)
    assert message.startswith(f"cannot upload a reference image to s3://{s3_bucket}/p: RuntimeError: boom")
    assert_one_clean_line(message)
    assert signature not in message


def test_repr_shows_the_location_not_the_credentials(s3_server, s3_bucket):
    text = repr(Uploader(f"s3://{s3_bucket}/p", s3_server.options()))
    assert text == f"<Uploader s3://{s3_bucket}/p (signed 3600s) uploaded=0 skipped=0>"


# --- file:// behind a web server -------------------------------------------------------------


def test_file_folder_is_served_at_the_public_url(http_folder):
    folder, base_url = http_folder
    uploader = Uploader(folder.as_uri(), public_url=base_url + "/")
    url = uploader.url_for(PNG, ".png")
    name = hashlib.sha256(PNG).hexdigest() + ".png"
    assert url == f"{base_url}/{name}"
    assert (folder / name).read_bytes() == PNG
    assert requests.get(url, timeout=10).content == PNG
    assert [p.name for p in folder.iterdir()] == [name]  # no partial file left behind


def test_file_folder_skips_what_is_there_and_replaces_a_truncated_copy(http_folder):
    folder, base_url = http_folder
    uploader = Uploader(folder.as_uri(), public_url=base_url)
    uploader.url_for(PNG, ".png")
    uploader.url_for(PNG, ".png")
    stored = folder / (hashlib.sha256(PNG).hexdigest() + ".png")
    stored.write_bytes(PNG[:10])  # as an interrupted copy would leave it
    uploader.url_for(PNG, ".png")
    assert (uploader.uploaded, uploader.skipped) == (2, 1)
    assert stored.read_bytes() == PNG


def test_file_folder_without_public_url_is_refused(tmp_path):
    with pytest.raises(InvalidRequestError, match="file:// folder: set upload_public_url") as caught:
        Uploader(tmp_path.as_uri())
    assert "\n" not in str(caught.value)


def test_missing_file_folder_is_a_one_line_error(tmp_path):
    uploader = Uploader((tmp_path / "absent").as_uri(), public_url="http://127.0.0.1:1/refs")
    with pytest.raises(NanoBananaError, match="does not exist"):
        uploader.url_for(PNG, ".png")


# --- configuration -----------------------------------------------------------------------------


def test_without_fsspec_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)
    monkeypatch.setitem(sys.modules, "fsspec.core", None)
    with pytest.raises(InvalidRequestError, match="needs fsspec") as caught:
        Uploader("s3://bucket/prefix")
    assert UPLOAD_EXTRA_HINT in str(caught.value)
    assert UPLOAD_EXTRA_HINT == 'pip install "nanobanana-magic[upload]"'


def test_without_the_s3_library_the_error_names_the_extra(monkeypatch):
    import fsspec.core

    def missing(*args, **kwargs):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing)
    with pytest.raises(InvalidRequestError, match="not installed") as caught:
        Uploader("s3://bucket/prefix")
    assert UPLOAD_EXTRA_HINT in str(caught.value)


def test_unknown_protocol_is_refused():
    with pytest.raises(InvalidRequestError, match="does not know this protocol"):
        Uploader("nosuchstore://bucket/prefix")


def test_storage_that_cannot_sign_asks_for_a_public_url():
    uploader = Uploader("memory://refs-test/p")
    with pytest.raises(InvalidRequestError, match="cannot make signed URLs; set upload_public_url"):
        uploader.url_for(PNG, ".png")


@pytest.mark.parametrize("upload_to, expiry", [("", 3600), ("s3://b/p", 0), ("s3://b/p", -5), ("s3://b/p", "1h")])
def test_empty_location_or_non_positive_expiry_is_refused(upload_to, expiry):
    with pytest.raises(InvalidRequestError):
        Uploader(upload_to, expiry=expiry)


@pytest.mark.parametrize("suffix", ["/../../escape", ".png/x", "png"])
def test_suffix_must_be_a_file_extension(tmp_path, suffix):
    uploader = Uploader(tmp_path.as_uri(), public_url="http://127.0.0.1:1/refs")
    with pytest.raises(InvalidRequestError, match="is not a file extension"):
        uploader.url_for(PNG, suffix)
    assert list(tmp_path.iterdir()) == []


def test_credentials_in_the_location_are_not_shown():
    with pytest.raises(InvalidRequestError) as caught:
        Uploader("nosuchstore://user:hunter2secret@host/prefix")
    assert "hunter2secret" not in str(caught.value)
