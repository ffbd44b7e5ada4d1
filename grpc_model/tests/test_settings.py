"""Settings: defaults, environment, flags, their precedence, and the README's table."""

import re

import pytest
from pydantic import ValidationError

from grpc_model.src.metadata.units import Range
from grpc_model.src.settings import (
    PROJECT_ROOT,
    Settings,
    describe_settings_error,
    env_var,
    flag,
    settings_from_args,
)


def test_defaults() -> None:
    settings = settings_from_args([])
    assert settings.port == 45000
    assert settings.host == "[::]"
    assert settings.model_class == "model_lib.src.model"
    assert settings.model_version == ""
    assert settings.max_receive_message_bytes == 0  # follows model.yaml
    assert settings.max_send_message_bytes == 250 * 1024 * 1024
    assert settings.load_model_at_startup is False


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_MODEL_PORT", "5000")
    monkeypatch.setenv("GRPC_MODEL_MODEL_CLASS", "pkg.mod:Env")
    monkeypatch.setenv("GRPC_MODEL_LOAD_MODEL_AT_STARTUP", "true")
    assert settings_from_args([]).port == 5000
    assert settings_from_args([]).load_model_at_startup is True

    settings = settings_from_args(["--port", "6000", "--no-load-model-at-startup"])

    assert (settings.port, settings.model_class, settings.load_model_at_startup) == (6000, "pkg.mod:Env", False)


def test_the_platform_port_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSC_MODEL_PORT", "45001")
    assert settings_from_args([]).port == 45001
    assert settings_from_args(["--port", "45002"]).port == 45002


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--port", "99999"], "port"),
        (["--shutdown-grace-seconds", "x"], "shutdown_grace_seconds"),
        (["--log-level", "VERBOSE"], "log_level"),
        (["--max-receive-message-bytes", "4294967296"], "max_receive_message_bytes"),  # gRPC takes an int32
        (["--max-send-message-bytes", "99999999999999999999"], "max_send_message_bytes"),
        (["--model-threads", "1000000"], "model_threads"),  # one OS thread each
        (["--workers", "1000000"], "workers"),  # one process each
    ],
)
def test_invalid_values_name_the_setting(args: list[str], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        settings_from_args(args)


def test_unknown_flags_are_rejected() -> None:
    with pytest.raises(SystemExit):
        settings_from_args(["--prot", "1"])


def test_the_docs_document_every_setting() -> None:
    readme = (PROJECT_ROOT / "docs/configuration.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| ")]
    for name in Settings.model_fields:
        assert any(f"`{env_var(name)}`" in row and f"`{flag(name)}`" in row for row in rows), (
            f"docs/configuration.md's table has no row for {name} ({env_var(name)}, {flag(name)})"
        )
    assert re.search(r"`PSC_MODEL_PORT`", readme)


def test_a_token_policy_needs_a_token() -> None:
    with pytest.raises(ValidationError, match="shutdown_token is empty"):
        settings_from_args(["--shutdown", "token"])
    assert settings_from_args(["--shutdown", "token", "--shutdown-token", "t"]).shutdown == "token"


def test_a_bare_port_variable_is_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8080")  # set by many hosting platforms for other purposes
    assert settings_from_args([]).port == 45000


def test_log_levels_are_the_documented_names_in_any_case() -> None:
    assert settings_from_args(["--log-level", "debug"]).log_level == "DEBUG"
    assert settings_from_args(["--log-level", "Warning"]).log_level == "WARNING"


NUMBERS = {name: field for name, field in Settings.model_fields.items() if field.annotation in (int, float)}


def test_every_number_has_a_range_with_a_unit() -> None:
    unbounded = [name for name, field in NUMBERS.items() if not any(isinstance(m, Range) for m in field.metadata)]
    assert NUMBERS
    assert unbounded == []


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_numbers_outside_their_range_name_the_range_and_unit(name: str) -> None:
    (bounds,) = [m for m in NUMBERS[name].metadata if isinstance(m, Range)]
    too_big = ["1e300", "inf", "nan", str(int(bounds.high) + 1), "9" * 400]
    for value in too_big + ([] if bounds.low_excluded else [str(bounds.low - 1)]):
        with pytest.raises(ValidationError) as raised:
            settings_from_args([flag(name), value])
        message = describe_settings_error(raised.value)
        assert message.startswith(f"  {name}: "), message
        if NUMBERS[name].annotation is float or value.lstrip("-").isdigit():  # an int field refuses '1e300' as text
            assert f"must be {'more than' if bounds.low_excluded else 'between'} " in message
            assert bounds.unit in message


def test_silly_numbers_stop_the_start_with_their_unit() -> None:
    with pytest.raises(ValidationError) as raised:
        settings_from_args(["--batch-wait-ms", "1e300"])
    assert describe_settings_error(raised.value) == (
        "  batch_wait_ms: must be between 0 and 60000 milliseconds (got '1e300')"
    )
