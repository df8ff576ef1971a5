"""Storage servers on loopback for the upload tests: an S3-compatible one (moto's server
mode, so s3fs does real HTTP) and a plain HTTP server over a folder (the `file://` case).

The fixtures `s3_server`, `s3_bucket` and `http_folder` (in conftest.py) are built on these.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Random per run, so tests can search every message for them.
S3_KEY = "AKIA" + secrets.token_hex(8).upper()
S3_SECRET = secrets.token_urlsafe(30)
S3_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def options(self, **extra: Any) -> dict[str, Any]:
        """s3fs storage options for this server, with the run's dummy credentials."""
        return {
            "endpoint_url": self.endpoint_url,
            "key": S3_KEY,
            "secret": S3_SECRET,
            "client_kwargs": {"region_name": S3_REGION},
            **extra,
        }

    def client(self) -> Any:
        """A boto3 client, to look at the server from outside the code under test."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name=S3_REGION,
        )

    def new_bucket(self) -> str:
        name = "refs-" + secrets.token_hex(6)
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        return sorted(item["Key"] for item in self.client().list_objects_v2(Bucket=bucket).get("Contents", []))


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """moto's S3 on 127.0.0.1 and a free port, in a thread of this process."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving_folder(folder: Path) -> Iterator[str]:
    """`folder` served over HTTP on 127.0.0.1 (a free port); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="test-static-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
