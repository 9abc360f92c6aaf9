"""Settings: every GATEWAY_* variable, validated once at start-up and passed down explicitly."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from decimal import Decimal
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as UnparsedSetting

from gateway import catalog


def _all_but_link_local() -> list[str]:
    """Every IPv4 and IPv6 address except link-local (169.254.0.0/16, fe80::/10), as CIDRs."""
    networks: list[str] = []
    for everything, link_local in (("0.0.0.0/0", "169.254.0.0/16"), ("::/0", "fe80::/10")):
        whole = ipaddress.ip_network(everything)
        rest = whole.address_exclude(ipaddress.ip_network(link_local))  # type: ignore[arg-type]
        networks.extend(str(n) for n in sorted(rest))
    return networks


class SettingsError(Exception):
    """A setting is invalid; the message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    database_url: str = "sqlite:///./data/gateway.db"
    wavespeed_api_key: str | None = None
    wavespeed_base_url: str = "https://api.wavespeed.ai"
    wavespeed_webhook_secret: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    admin_token: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    upstream_max_concurrency: int = Field(default=100, ge=1)
    upstream_timeout_seconds: float = Field(default=30.0, gt=0)
    upstream_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    webhook_grace_seconds: float = Field(default=60.0, ge=0)
    poll_interval_seconds: float = Field(default=10.0, gt=0)
    submit_deadline_seconds: float = Field(default=300.0, gt=0)
    submit_retry_seconds: float = Field(default=2.0, gt=0)
    webhook_tolerance_seconds: int = Field(default=300, ge=1)
    # How long enable_sync_mode on /api/v3 holds the answer before WaveSpeed's code 5004.
    sync_mode_timeout_seconds: float = Field(default=90.0, gt=0, le=600)

    max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # prometheus-client's multiprocess mode, for several worker processes: the directory where
    # every worker writes its metric values. The variable prometheus-client itself reads.
    prometheus_multiproc_dir: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"),
    )
    # Overrides of catalog prices, e.g. GATEWAY_PRICES='{"flux-kontext-max": "0.09"}'.
    prices: dict[str, Decimal] = Field(default_factory=dict)
    # Networks that tenant callback URLs may resolve into (CIDRs). Internal platforms call
    # private addresses, so the default is every address except link-local, where cloud
    # metadata lives; metadata addresses are refused whatever this says (gateway.callbacks.urls).
    callback_allowed_networks: list[str] = Field(default_factory=_all_but_link_local)
    callback_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    # Seconds before each delivery attempt of a callback: the first counts from the
    # transition, each next one from the previous failure; past the last, dead-lettered.
    callback_retry_schedule: list[float] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    callback_retry_jitter: float = Field(default=0.1, ge=0, le=1)  # +- this fraction of a delay
    callback_max_concurrency: int = Field(default=64, ge=1)
    callback_max_concurrency_per_endpoint: int = Field(default=4, ge=1)
    # How often the deliverer looks for due callbacks that no commit in this process announced.
    callback_poll_seconds: float = Field(default=1.0, gt=0)
    # Delivered and dead-lettered callbacks (with their attempts) are kept this long for
    # listing and redelivery, then deleted.
    callback_retention_days: float = Field(default=30.0, gt=0)

    @field_validator("wavespeed_base_url", "public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _sqlite_only(cls, value: str) -> str:
        if not value.startswith("sqlite:///"):
            raise ValueError("only sqlite:///PATH is supported (e.g. sqlite:///./data/gateway.db)")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value  # INFO, as Python spells it

    @field_validator("wavespeed_webhook_secret")
    @classmethod
    def _whsec(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("whsec_"):
            raise ValueError("must start with whsec_")
        return value

    @field_validator("callback_allowed_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR network") from exc
        return value

    @field_validator("callback_retry_schedule")
    @classmethod
    def _schedule(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("needs at least one delay (the first attempt's, usually 0)")
        if any(not math.isfinite(delay) or delay < 0 for delay in value):
            raise ValueError("delays must be finite numbers of seconds, not negative")
        return value

    @field_validator("prometheus_multiproc_dir")
    @classmethod
    def _directory(cls, value: str | None) -> str | None:
        if value is not None and not os.path.isdir(value):
            raise ValueError(f"{value!r} is not a directory")
        return value

    @field_validator("prices")
    @classmethod
    def _prices_positive(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        known = (*catalog.MODELS, *catalog.BY_WAVESPEED_ID)
        for model, price in value.items():
            if model not in known:  # a typo would otherwise leave the catalog price in force
                raise ValueError(f"unknown model {model!r}; known: {', '.join(known)}")
            if price < 0:
                raise ValueError(f"price for {model} must not be negative")
        return value

    @property
    def database_path(self) -> str:
        return self.database_url.removeprefix("sqlite:///")

    @property
    def uses_simulator(self) -> bool:
        return self.wavespeed_api_key is None


# The settings whose value is JSON (a list or an object), with an example of each.
_JSON_EXAMPLES = {
    "prices": '{"flux-kontext-max": "0.09"}',
    "callback_allowed_networks": '["10.0.0.0/8", "192.168.0.0/16"]',
    "callback_retry_schedule": "[0, 5, 300, 1800]",
}


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; a bad value becomes one SettingsError line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except UnparsedSetting as exc:  # not JSON where JSON is expected
        found = re.search(r'field "(\w+)"', str(exc))
        field = found.group(1) if found else "settings"
        example = _JSON_EXAMPLES.get(field)
        shape = f"JSON, e.g. {example}" if example else "JSON"
        raise SettingsError(f"invalid setting {variable_name(field)}: must be {shape}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        raise SettingsError(f"invalid setting {variable_name(field)}: {first['msg']}") from None


def variable_name(name: str) -> str:
    """The environment variable a setting is read from: GATEWAY_<FIELD>, or the alias a field
    is read through (PROMETHEUS_MULTIPROC_DIR). ``name`` is a field's name or that alias."""
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else []
        if name == field or name in choices:
            first = choices[0] if choices else None
            return first if isinstance(first, str) else f"GATEWAY_{field.upper()}"
    return f"GATEWAY_{name.upper()}"
