"""Upload reference images to an fsspec location and hand back a URL the API can fetch.

The API takes reference images by public URL only, so a local file or an in-memory image is
copied to `upload_to` (S3, Google Cloud Storage, a web server's folder, anything fsspec
reaches) under the sha256 of its bytes: the same image is stored once, whoever uploads it.
The URL sent is a signed one (valid `expiry` seconds) unless `public_url` names a prefix
that serves the location as is.

fsspec and its back ends are optional (`pip install "nanobanana-magic[upload]"`) and are
imported only when an `Uploader` is made.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import secrets
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..core.errors import InvalidRequestError, NanoBananaError

UPLOAD_EXTRA_HINT = 'pip install "nanobanana-magic[upload]"'

# Two threads uploading the same bytes would both upload; a lock per object name makes the
# second one wait and then find the object. Striped (the name's first byte picks one of
# these) so the number of locks stays fixed however many images pass through.
_NAME_LOCK_STRIPES = 64

# Storage option names whose values are secrets (redacted from any message even if the
# storage library quoted them).
_SECRET_OPTION = re.compile(r"key|secret|token|password|credential|passphrase|sas|signature", re.I)
_S3_MAX_EXPIRY = 7 * 24 * 3600  # SigV4's ceiling for a presigned URL

_EXTRA_SCHEMES = ("s3", "s3a", "gs", "gcs")
_CREDENTIAL_PLACES = {
    "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or an AWS profile",
    "s3a": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or an AWS profile",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS or gcloud's application-default login",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS or gcloud's application-default login",
}
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
# What a signature, an access key or a token looks like when a library echoes one.
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9+=_\-]{32,}")
_QUERY = re.compile(r"\?\S*")
_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,8})?")  # the name must stay inside the prefix


class Uploader:
    """Stores image bytes under `upload_to` once per sha256 and returns a URL for them.

    One filesystem object per Uploader, safe to share between worker threads. `uploaded`
    and `skipped` count the objects written and the ones found already there.
    """

    def __init__(
        self, upload_to: str, options: Mapping[str, Any] | None = None, public_url: str = "", expiry: float = 3600
    ) -> None:
        upload_to = (upload_to or "").strip()
        if not upload_to:
            raise InvalidRequestError("upload_to is empty; give an fsspec URL such as 's3://bucket/prefix'")
        if isinstance(expiry, bool) or not isinstance(expiry, (int, float)) or expiry <= 0:
            raise InvalidRequestError(f"upload_expiry must be a positive number of seconds, not {expiry!r}")
        self.upload_to = upload_to
        self.public_url = (public_url or "").strip()
        self.expiry = int(expiry)
        self.uploaded = 0
        self.skipped = 0
        self._options = dict(options or {})
        self._where = _display_location(upload_to)
        self._fs, self._root = self._open_filesystem()
        self._is_local = "file" in _protocols(self._fs) or "local" in _protocols(self._fs)
        if self._is_local and not self.public_url:
            raise InvalidRequestError(
                f"upload_to {self._where} is a file:// folder: set upload_public_url to the URL prefix "
                "of the web server that serves it (the API fetches images over http)"
            )
        self._counts_lock = threading.Lock()  # guards uploaded / skipped
        self._name_locks = [threading.Lock() for _ in range(_NAME_LOCK_STRIPES)]

    def __repr__(self) -> str:
        mode = f"public {self.public_url}" if self.public_url else f"signed {self.expiry}s"
        return f"<Uploader {self._where} ({mode}) uploaded={self.uploaded} skipped={self.skipped}>"

    def url_for(self, data: bytes, suffix: str) -> str:
        """The URL the API can fetch `data` from, uploading it first unless it is already stored."""
        if not _SUFFIX.fullmatch(suffix):
            raise InvalidRequestError(f"upload suffix {suffix[:20]!r} is not a file extension such as '.png'")
        name = hashlib.sha256(data).hexdigest() + suffix
        path = f"{self._root.rstrip('/')}/{name}"
        try:
            with self._name_locks[int(name[:2], 16) % _NAME_LOCK_STRIPES]:
                if self._stored_size(path) == len(data):
                    self._count(skipped=1)
                else:
                    self._write(path, data, suffix)
                    self._count(uploaded=1)
            return self._url(path, name)
        except NanoBananaError:
            raise
        except Exception as exc:  # the storage libraries raise anything; one line, no secrets
            raise NanoBananaError(self._describe(exc)) from None

    def _open_filesystem(self) -> tuple[Any, str]:
        try:
            import fsspec.core
        except ImportError:
            raise InvalidRequestError(f"uploading reference images needs fsspec: {UPLOAD_EXTRA_HINT}") from None
        # skip_instance_cache: fsspec would otherwise hand the same object (and the
        # credentials it resolved) to every Uploader with equal options.
        options = {"skip_instance_cache": True, **self._options}
        if _scheme(self.upload_to) in ("s3", "s3a"):
            # SigV4 presigned URLs work in every AWS region and on S3-compatible servers;
            # botocore may otherwise sign with the legacy v2 scheme newer regions refuse.
            config = dict(options.get("config_kwargs") or {})
            config.setdefault("signature_version", "s3v4")
            options["config_kwargs"] = config
            if not self.public_url and self.expiry > _S3_MAX_EXPIRY:
                raise InvalidRequestError(
                    f"upload_expiry is {self.expiry} s; S3 signed URLs last at most {_S3_MAX_EXPIRY} s (7 days)"
                )
        try:
            return fsspec.core.url_to_fs(self.upload_to, **options)
        except ImportError as exc:
            # fsspec's message names the missing library (e.g. "Install adlfs to access Azure");
            # the extra covers S3 and Google Cloud Storage only.
            hint = UPLOAD_EXTRA_HINT if _scheme(self.upload_to) in _EXTRA_SCHEMES else _clean(str(exc), [])
            raise InvalidRequestError(
                f"upload_to {self._where} needs a storage library that is not installed: {hint}"
            ) from None
        except ValueError as exc:
            if "protocol" in str(exc).lower():
                raise InvalidRequestError(
                    f"upload_to {self._where}: fsspec does not know this protocol; "
                    "use e.g. s3://bucket/prefix, gs://bucket/prefix or file:///srv/www/refs"
                ) from None
            raise InvalidRequestError(self._describe(exc, action="cannot use")) from None
        except Exception as exc:
            raise InvalidRequestError(self._describe(exc, action="cannot use")) from None

    def _stored_size(self, path: str) -> int | None:
        """The size of the object already at `path`, or None when there is none."""
        try:
            info = self._fs.info(path)
        except FileNotFoundError:
            return None
        size = info.get("size")
        return int(size) if size is not None else None

    def _write(self, path: str, data: bytes, suffix: str) -> None:
        if self._is_local:
            # A web server may serve the folder while we write: write beside, then rename
            # (atomic on one file system), so it never serves half an image.
            partial = f"{path}.partial-{secrets.token_hex(4)}"
            self._fs.pipe_file(partial, data)
            self._fs.mv(partial, path)
            return
        content_type = mimetypes.guess_type("x" + suffix)[0] or "application/octet-stream"
        protocols = _protocols(self._fs)
        if "s3" in protocols or "s3a" in protocols:
            self._fs.pipe_file(path, data, ContentType=content_type)
        elif "gs" in protocols or "gcs" in protocols:
            self._fs.pipe_file(path, data, content_type=content_type)
        else:
            self._fs.pipe_file(path, data)

    def _url(self, path: str, name: str) -> str:
        if self.public_url:
            return self.public_url.rstrip("/") + "/" + name
        try:
            return self._fs.sign(path, expiration=self.expiry)
        except NotImplementedError:
            raise InvalidRequestError(
                f"upload_to {self._where} cannot make signed URLs; set upload_public_url to the "
                "URL prefix that serves it"
            ) from None

    def _count(self, *, uploaded: int = 0, skipped: int = 0) -> None:
        with self._counts_lock:
            self.uploaded += uploaded
            self.skipped += skipped

    def _describe(self, exc: BaseException, *, action: str = "cannot upload a reference image to") -> str:
        return f"{action} {self._where}: {_reason(exc, self._secrets(), _scheme(self.upload_to))}"

    def _secrets(self) -> list[str]:
        values = [str(v) for k, v in _flatten(self._options) if _SECRET_OPTION.search(k) and v]
        password = urlsplit(self.upload_to).password
        from_env = [os.environ.get(name, "") for name in _SECRET_ENV]
        return values + [v for v in from_env + [password] if v]


def _reason(exc: BaseException, secrets_: list[str], scheme: str) -> str:
    """What went wrong, in words of our own where the cause is known, else the library's, cleaned."""
    names = {type(e).__name__ for e in _chain(exc)}
    code = _service_code(exc)
    tag = f" ({code})" if code else ""
    if names & {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"}:
        where = _CREDENTIAL_PLACES.get(scheme, "where the storage library looks for them")
        return f"no credentials found; set them in {where}, or pass them in upload_options"
    if isinstance(exc, PermissionError) or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"access denied{tag}; check the credentials and their permissions on this location"
    if isinstance(exc, FileNotFoundError) or code in ("NoSuchBucket", "NotFound"):
        return f"the bucket or folder does not exist{tag}"
    if names & {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ClientConnectorError",
        "ConnectionRefusedError",
        "ServerDisconnectedError",
    }:
        return "cannot reach the storage service; check upload_options (endpoint_url) and the network"
    return f"{type(exc).__name__}{tag}: {_clean(str(exc), secrets_)}"


def _clean(text: str, secrets_: list[str]) -> str:
    """`text` on one line, short, with secrets, query strings and token-like runs removed."""
    for secret in sorted(secrets_, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _QUERY.sub("?…", text)
    text = _TOKEN_LIKE.sub("…", text)
    text = " ".join(text.split())
    return (text[:200] + "…") if len(text) > 200 else (text or "no message")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in seen and len(seen) < 10:
        seen.append(link)
        link = link.__cause__ or link.__context__
    return seen


def _service_code(exc: BaseException) -> str:
    """The storage service's error code (botocore's ClientError), when one is in the chain."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            if re.fullmatch(r"[A-Za-z0-9.]{1,64}", code):
                return code
    return ""


def _flatten(options: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in options.items():
        if isinstance(value, Mapping):
            items.extend(_flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _display_location(url: str) -> str:
    """`url` without any user:password part, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
