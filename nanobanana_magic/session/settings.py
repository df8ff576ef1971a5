"""`Settings`: what a session reads of the configuration, as one frozen value rebuilt when a setting changes."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.params import DEFAULT_BASE_URL
from ..core.secret import ApiKey, as_key
from ..http.budget import DEFAULT_RATE

# How long a finished task's result URL is sent as a reference instead of an upload of the saved
# file. The provider documents only that originImageUrl lives about 10 minutes and resultImageUrl
# "longer but not forever"; half of that known minimum leaves the API five minutes to fetch the
# URL (a task takes 10 to 60 s) however late in the window it is sent. Past it, the saved file is
# uploaded: one upload per image (objects are named by sha256) is cheap next to a failed task.
DEFAULT_RESULT_URL_TTL = 300.0


@dataclass(frozen=True)
class Settings:
    """The session's view of the configuration. Nothing else is read from the magics."""

    api_key: ApiKey | None = None
    base_url: str = DEFAULT_BASE_URL
    output_dir: str = "nanobanana_outputs"
    timeout: float = 600.0
    cache: bool = True
    poll_schedule: str | Sequence[Sequence[float]] = "auto"  # "auto": learned from output_dir's history
    max_requests_per_second: float = DEFAULT_RATE
    workers: int = 2
    concurrency: int = 4
    retries: int = 4
    retry_backoff: float = 0.5
    retry_backoff_max: float = 20.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    download_timeout: float = 120.0
    credit_costs: Mapping[str, float] = field(default_factory=dict)
    max_credits: float | None = None
    # Reference images the API cannot fetch by itself go to `upload_to` (see runtime/uploads.py).
    upload_to: str = ""
    upload_options: Mapping[str, Any] = field(default_factory=dict, repr=False)  # may hold credentials
    upload_public_url: str = ""
    upload_expiry: float = 3600.0
    result_url_ttl: float = DEFAULT_RESULT_URL_TTL

    @property
    def upload_key(self) -> tuple[Any, ...]:
        """The settings an uploader is built from: a change rebuilds it."""
        options = tuple(sorted((str(k), repr(v)) for k, v in self.upload_options.items()))
        return (self.upload_to.strip(), options, self.upload_public_url.strip(), self.upload_expiry)

    @property
    def connection_key(self) -> tuple[Any, ...]:
        """The settings a connection is built from: a change rebuilds it."""
        return (
            self.api_key,
            self.base_url.rstrip("/"),
            self.retries,
            self.retry_backoff,
            self.retry_backoff_max,
            self.connect_timeout,
            self.read_timeout,
            self.download_timeout,
        )

    @classmethod
    def from_environment(cls) -> Settings:
        """Defaults with NANOBANANA_API_KEY, NANOBANANA_BASE_URL, NANOBANANA_OUTPUT_DIR and
        NANOBANANA_UPLOAD_TO applied (plain scripts)."""
        env = {
            name: os.environ.get(var, "").strip()
            for name, var in (
                ("api_key", "NANOBANANA_API_KEY"),
                ("base_url", "NANOBANANA_BASE_URL"),
                ("output_dir", "NANOBANANA_OUTPUT_DIR"),
                ("upload_to", "NANOBANANA_UPLOAD_TO"),
            )
        }
        return cls(
            api_key=as_key(env["api_key"] or None),
            base_url=env["base_url"] or DEFAULT_BASE_URL,
            output_dir=env["output_dir"] or "nanobanana_outputs",
            upload_to=env["upload_to"],
        )
