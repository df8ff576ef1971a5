"""`Settings`: what a session reads of the configuration, as one frozen value rebuilt when a setting changes."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.params import DEFAULT_BASE_URL
from ..core.secret import ApiKey, as_key
from ..http.budget import DEFAULT_RATE


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
        """Defaults with NANOBANANA_API_KEY, NANOBANANA_BASE_URL and NANOBANANA_OUTPUT_DIR applied (plain scripts)."""
        env = {
            name: os.environ.get(var, "").strip()
            for name, var in (
                ("api_key", "NANOBANANA_API_KEY"),
                ("base_url", "NANOBANANA_BASE_URL"),
                ("output_dir", "NANOBANANA_OUTPUT_DIR"),
            )
        }
        return cls(
            api_key=as_key(env["api_key"] or None),
            base_url=env["base_url"] or DEFAULT_BASE_URL,
            output_dir=env["output_dir"] or "nanobanana_outputs",
        )
