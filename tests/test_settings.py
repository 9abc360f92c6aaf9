"""Settings: every GATEWAY_* variable validated at start-up; a bad one stops the process with
one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_PORT", "eighty"),
        ("GATEWAY_PORT", "70000"),
        ("GATEWAY_DATABASE_URL", "postgres://db/gateway"),
        ("GATEWAY_WAVESPEED_BASE_URL", "api.wavespeed.ai"),
        ("GATEWAY_WAVESPEED_WEBHOOK_SECRET", "not-a-whsec"),
        ("GATEWAY_LOG_FORMAT", "xml"),
        ("GATEWAY_UPSTREAM_MAX_CONCURRENCY", "0"),
        ("GATEWAY_POLL_INTERVAL_SECONDS", "-1"),
        ("GATEWAY_PRICES", '{"flux-kontext-max": "-0.01"}'),
        ("GATEWAY_PRICES", '{"flux-kontext-maxx": "0.10"}'),  # a typo: no price would change
        ("GATEWAY_PRICES", "flux-kontext-max=0.09"),  # not JSON
        ("GATEWAY_CALLBACK_ALLOWED_NETWORKS", "10.0.0.0/8"),  # not JSON
        ("GATEWAY_CALLBACK_RETRY_SCHEDULE", "0,5,300"),  # not JSON
        ("GATEWAY_UPSTREAM_TRANSPORT", "curl"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert variable in message


def test_a_value_that_is_not_json_says_what_json_is_expected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_CALLBACK_ALLOWED_NETWORKS", "10.0.0.0/8")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        'invalid setting GATEWAY_CALLBACK_ALLOWED_NETWORKS: must be JSON, e.g. '
        '["10.0.0.0/8", "192.168.0.0/16"]'
    )


def test_a_setting_read_through_another_name_is_named_by_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith("invalid setting PROMETHEUS_MULTIPROC_DIR: ")


def test_log_level_is_read_in_either_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_LOG_LEVEL", "INFO")
    monkeypatch.setenv("GATEWAY_LOG_FORMAT", "Console")
    settings = load_settings()
    assert (settings.log_level, settings.log_format) == ("info", "console")


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    settings = load_settings()
    assert settings.database_url == "sqlite:///./data/gateway.db"
    assert settings.wavespeed_base_url == "https://api.wavespeed.ai"
    assert settings.uses_simulator and settings.admin_token is None
    assert (settings.upstream_max_concurrency, settings.webhook_grace_seconds) == (100, 60.0)
    assert (settings.poll_interval_seconds, settings.submit_deadline_seconds) == (10.0, 300.0)
    assert settings.upstream_transport == "aiohttp"


def test_serve_refuses_to_start_with_a_bad_setting(tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_PORT": "eighty", "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/g.db"}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "GATEWAY_PORT" in lines[0], done.stderr


def test_the_readme_names_every_setting() -> None:
    from gateway.settings import Settings, variable_name

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [variable_name(f) for f in Settings.model_fields if f"`{variable_name(f)}`" not in readme]
    assert missing == []
