"""The settings of `NanoBananaMagics` as traitlets: `%config NanoBananaMagics` documents and validates them."""

from __future__ import annotations

import math
import os
import re
from typing import Any

from traitlets import Bool, Dict, Enum, Float, HasTraits, Int, List, TraitError, TraitType, Unicode, Union, validate
from traitlets.config import Configurable

from ..core.errors import InvalidRequestError
from ..core.params import DEFAULT_BASE_URL, PARAMETERS, RESOLUTIONS, Param
from ..core.schedule import validate_schedule
from ..core.secret import ApiKey, as_key
from ..http.budget import DEFAULT_RATE
from ..session.settings import DEFAULT_RESULT_URL_TTL, Settings

ENVIRONMENT = {
    "api_key": "NANOBANANA_API_KEY",
    "base_url": "NANOBANANA_BASE_URL",
    "output_dir": "NANOBANANA_OUTPUT_DIR",
    "upload_to": "NANOBANANA_UPLOAD_TO",
}
MAX_RATE = 10_000.0
# A signed URL must outlive the API's fetch of it (during generation, up to minutes after the
# submit); S3 (SigV4) and Google Cloud Storage (V4) sign for at most 7 days.
MIN_UPLOAD_EXPIRY, MAX_UPLOAD_EXPIRY = 60, 7 * 24 * 3600
_UPLOAD_EXAMPLES = "e.g. s3://bucket/prefix, gs://bucket/prefix or file:///srv/www/refs"
_SECRET_OPTION = re.compile(r"key|secret|token|password|credential|passphrase|sas|signature", re.I)


class StorageOptions(dict):
    """`upload_options` as set, but shown with secret-looking values masked (`%config`, `%nanobanana config`)."""

    def __repr__(self) -> str:
        return repr(_masked(self))


def _masked(options: Any) -> Any:
    if not isinstance(options, dict):
        return options
    return {k: "***" if _SECRET_OPTION.search(str(k)) and v else _masked(v) for k, v in options.items()}


def one_line(error: TraitError, owner: HasTraits | None = None) -> str:
    """A traitlets refusal in our words: `workers must be an int, not the str 'x'`; a value out of
    bounds names the allowed ones from `owner`'s trait: `workers 0 is not allowed; use 1 to 32 (default 2)`."""
    text = " ".join(str(error).split())
    typed = re.match(r"The '(\w+)' trait of an? \w+ instance expected (.+?), not (.+?)\.?$", text)
    if typed:
        return f"{typed.group(1)} must be {typed.group(2)}, not {typed.group(3)}"
    bounded = re.match(
        r"The value of the '(\w+)' trait of an? \w+ instance should (not be \w+ than [^,]+), "
        r"but a value of (.+?) was specified",
        text,
    )
    if bounded:
        name, rule, value = bounded.groups()
        allowed = _bounds(owner.traits().get(name)) if owner is not None else None
        if allowed:
            return f"{name} {value} is not allowed; use {allowed}"
        return f"{name} should {rule}, not {value}"
    return text


def _bounds(trait: TraitType | None) -> str | None:
    """`1 to 32 (default 2)`, `0 or more (default 4)`, or None for a trait without bounds."""
    low, high = getattr(trait, "min", None), getattr(trait, "max", None)
    if trait is None or (low is None and high is None):
        return None
    span = (
        f"{low:g} to {high:g}"
        if low is not None and high is not None
        else (f"{low:g} or more" if low is not None else f"at most {high:g}")
    )
    default = trait.default_value
    return f"{span} (default {default:g})" if isinstance(default, (int, float)) else span


class ApiKeyTrait(TraitType):
    """Holds an `ApiKey`: strings are wrapped, so `%config` and reprs only ever show it masked."""

    default_value = None
    info_text = "an API key (shown masked)"

    def validate(self, obj: Any, value: Any) -> ApiKey | None:
        try:
            return as_key(value)
        except (TypeError, ValueError):
            self.error(obj, "<a value that is not a key>")
        return None


class ParamTrait(TraitType):
    """A configurable default for one request parameter, validated by that parameter."""

    def __init__(self, param: Param, **kwargs: Any) -> None:
        super().__init__(default_value=param.default, help=f"Default {param.label}: {param.help}.", **kwargs)
        self.param = param
        self.info_text = f"one of {' '.join(param.choices)}" if param.choices else param.kind

    def validate(self, obj: Any, value: Any) -> Any:
        try:
            return self.param.clean(value)
        except InvalidRequestError as exc:
            raise TraitError(str(exc)) from None


# Defaults of the configurable parameters, one trait per Param: a parameter added to
# PARAMETERS with configurable=True becomes a NanoBananaMagics setting with no change here.
ParameterDefaults = type(
    "ParameterDefaults", (Configurable,), {p.name: ParamTrait(p).tag(config=True) for p in PARAMETERS if p.configurable}
)


class SettingsTraits(ParameterDefaults):  # type: ignore[misc, valid-type]
    """Every setting of the extension, with its help; `settings()` is what the session reads."""

    api_key = ApiKeyTrait(allow_none=True, help="API key (env NANOBANANA_API_KEY); never shown unmasked").tag(
        config=True
    )
    base_url = Unicode(DEFAULT_BASE_URL, help="API base URL (env NANOBANANA_BASE_URL)").tag(config=True)
    output_dir = Unicode("nanobanana_outputs", help="where images and runs.jsonl go (env NANOBANANA_OUTPUT_DIR)").tag(
        config=True
    )
    wait = Union(
        [Enum(["auto"]), Bool()],
        default_value="auto",
        help="block until done: 'auto' blocks in headless runs and terminals, True/False force it",
    ).tag(config=True)
    timeout = Float(600.0, help="seconds before a task is given up (it may still finish: fetch it)").tag(config=True)
    cache = Bool(True, help="answer a request equal to an earlier successful one from its saved file").tag(config=True)
    preview_max_px = Int(1024, min=64, help="longest side of the preview embedded in the notebook").tag(config=True)
    preview_format = Enum(["jpeg", "png"], "jpeg", help="format of the embedded preview").tag(config=True)
    short_errors = Bool(True, help="show this package's errors as one line (False: full traceback)").tag(config=True)
    poll_schedule = Union(
        [Enum(["auto"]), List()],
        default_value="auto",
        help="'auto': polls learned from the finished tasks in output_dir (per resolution); "
        "[[until_seconds, every_seconds], ...] fixes the cadence",
    ).tag(config=True)
    max_requests_per_second = Float(
        DEFAULT_RATE,
        help="ceiling on the kernel's API requests (submits, polls, credits) in any one-second window; "
        "429s slow it down further by themselves",
    ).tag(config=True)
    workers = Int(
        2, min=1, max=32, help="background threads that download, check, save and preview finished results"
    ).tag(config=True)
    concurrency = Int(4, min=1, help="tasks pending at once in a sweep or batch").tag(config=True)
    retries = Int(4, min=0, max=20, help="retries of a failed request (never of a submit that may have arrived)").tag(
        config=True
    )
    retry_backoff = Float(0.5, min=0.0, help="seconds before the first retry; doubles each time, with jitter").tag(
        config=True
    )
    max_credits = Float(
        None,
        allow_none=True,
        help="a budget of credits for this kernel from the moment it is set (setting it again starts a new one); "
        "a submit or sweep that would pass it is refused and nothing is sent",
    ).tag(config=True)
    credit_costs = Dict(
        {},
        help="credits per task by resolution, if known, e.g. {'1K': 4, '2K': 6, '4K': 12}: "
        "dry runs then say what a sweep costs",
    ).tag(config=True)
    upload_to = Unicode(
        "",
        help="fsspec URL where local reference images are uploaded (env NANOBANANA_UPLOAD_TO), "
        f"{_UPLOAD_EXAMPLES}; '' = none (then -i takes URLs and fresh results only)",
    ).tag(config=True)
    upload_options = Dict(
        {},
        help="fsspec storage options for upload_to, e.g. {'endpoint_url': 'http://127.0.0.1:9000'}; "
        "credentials are best left to the storage library's usual places (environment, profiles)",
    ).tag(config=True)
    upload_public_url = Unicode(
        "",
        help="'' = send signed URLs (valid upload_expiry seconds); else the http(s) URL prefix that serves "
        "upload_to as is (a file:// folder behind a web server, a public bucket)",
    ).tag(config=True)
    upload_expiry = Float(
        3600.0,
        help=f"seconds a signed upload URL stays valid ({MIN_UPLOAD_EXPIRY} to {MAX_UPLOAD_EXPIRY}, 7 days)",
    ).tag(config=True)
    result_url_ttl = Float(
        DEFAULT_RESULT_URL_TTL,
        help="seconds after a task finished during which its result URL is sent when the result is used "
        "as a reference (-i @result); later the saved file is uploaded. Default 300: half of the ~10 min "
        "the provider documents for its shortest-lived URLs, so the API has minutes left to fetch it",
    ).tag(config=True)

    def update_config(self, config: Any) -> None:
        """Apply `%config` / ipython_config values; a refused one is kept as one line in `config_errors`
        while `%config` runs (the extension's wrapper fails the cell with it), else raised."""
        try:
            super().update_config(config)
        except TraitError as exc:
            if not self.__dict__.get("collect_config_errors"):
                raise
            self.config_errors.append(one_line(exc, self))
            return
        # traitlets validates a config value only when it changes: `%config ...max_credits = 10`
        # given twice must still start a new budget the second time.
        if "max_credits" in self._find_my_config(config) and "session" in self.__dict__:
            self.session.spending.start(self.max_credits)

    @property
    def config_errors(self) -> list[str]:
        return self.__dict__.setdefault("_config_errors", [])

    def apply_environment(self) -> None:
        """Precedence: defaults < ipython_config < environment < %config < flags."""
        for trait, variable in ENVIRONMENT.items():
            value = os.environ.get(variable, "").strip()
            if value:
                setattr(self, trait, value)

    def settings(self) -> Settings:
        """The frozen settings a session reads, from the traits as they are now."""
        return Settings(
            api_key=self.api_key,
            base_url=self.base_url,
            output_dir=self.output_dir,
            timeout=self.timeout,
            cache=self.cache,
            poll_schedule=self.poll_schedule
            if self.poll_schedule == "auto"
            else tuple(tuple(step) for step in self.poll_schedule),
            max_requests_per_second=self.max_requests_per_second,
            workers=self.workers,
            concurrency=self.concurrency,
            retries=self.retries,
            retry_backoff=self.retry_backoff,
            credit_costs=dict(self.credit_costs),
            upload_to=self.upload_to,
            upload_options=dict(self.upload_options),
            upload_public_url=self.upload_public_url,
            upload_expiry=self.upload_expiry,
            result_url_ttl=self.result_url_ttl,
        )

    @validate("timeout")
    def _check_timeout(self, proposal: Any) -> float:
        value = proposal["value"]
        if not math.isfinite(value) or value <= 0:
            raise TraitError(f"timeout {value:g} is not allowed; use a number of seconds above 0 (default 600)")
        return value

    @validate("poll_schedule")
    def _check_schedule(self, proposal: Any) -> Any:
        value = proposal["value"]
        if value == "auto":
            return value
        try:
            return [list(step) for step in validate_schedule(value)]
        except ValueError as exc:
            raise TraitError(f"{exc}; or 'auto'") from None

    @validate("max_requests_per_second")
    def _check_rate(self, proposal: Any) -> float:
        value = proposal["value"]
        if not math.isfinite(value) or not 0.1 <= value <= MAX_RATE:
            raise TraitError(
                f"max_requests_per_second {value:g} is not allowed; use 0.1 to {MAX_RATE:g} (default {DEFAULT_RATE:g})"
            )
        return value

    @validate("max_credits")
    def _check_max_credits(self, proposal: Any) -> float | None:
        value = proposal["value"]
        if value is not None and (not math.isfinite(value) or value < 0):
            raise TraitError(f"max_credits {value:g} is not allowed; use a number of credits (0 or more) or None")
        # Validation runs on every assignment, a change or not: each one starts a new budget.
        if "session" in self.__dict__:
            self.session.spending.start(value)
        return value

    @validate("credit_costs")
    def _check_costs(self, proposal: Any) -> dict:
        costs = {}
        for key, cost in proposal["value"].items():
            resolution = str(key).upper()
            if resolution not in RESOLUTIONS:
                raise TraitError(f"credit_costs key {key!r} is not a resolution; use {' '.join(RESOLUTIONS)}")
            if isinstance(cost, bool) or not isinstance(cost, (int, float)) or cost < 0 or not math.isfinite(cost):
                raise TraitError(f"credit_costs[{key!r}] = {cost!r} is not a number of credits (0 or more)")
            costs[resolution] = cost
        return costs

    @validate("upload_to")
    def _check_upload_to(self, proposal: Any) -> str:
        value = proposal["value"].strip()
        if value and not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+", value):
            raise TraitError(f"upload_to {value[:80]!r} is not an fsspec URL; use {_UPLOAD_EXAMPLES}, or '' for none")
        return value

    @validate("upload_options")
    def _check_upload_options(self, proposal: Any) -> StorageOptions:
        value = proposal["value"]
        bad = [k for k in value if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise TraitError(
                f"upload_options key {bad[0]!r} is not an option name; use fsspec storage options "
                "such as {'endpoint_url': 'http://127.0.0.1:9000'}"
            )
        return StorageOptions(value)

    @validate("upload_public_url")
    def _check_public_url(self, proposal: Any) -> str:
        value = proposal["value"].strip()
        if value and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value, re.I):
            raise TraitError(
                f"upload_public_url {value[:80]!r} is not an http(s) URL prefix; "
                "use e.g. https://bucket.example.org/refs, or '' for signed URLs"
            )
        return value

    @validate("upload_expiry")
    def _check_upload_expiry(self, proposal: Any) -> float:
        value = proposal["value"]
        if not MIN_UPLOAD_EXPIRY <= value <= MAX_UPLOAD_EXPIRY:  # NaN fails too
            raise TraitError(
                f"upload_expiry {value:g} is not allowed; use {MIN_UPLOAD_EXPIRY} to {MAX_UPLOAD_EXPIRY} seconds "
                "(the API must fetch the image before it expires; signed URLs last at most 7 days)"
            )
        return value

    @validate("result_url_ttl")
    def _check_result_url_ttl(self, proposal: Any) -> float:
        value = proposal["value"]
        if not math.isfinite(value) or value < 0:
            raise TraitError(
                f"result_url_ttl {value:g} is not allowed; use 0 (always upload the saved file) or more seconds "
                f"(default {DEFAULT_RESULT_URL_TTL:g})"
            )
        return value
