import subprocess
import sys
from pathlib import Path

import pytest

from csms.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_is_valid_and_has_mobie_defaults() -> None:
    from csms.cli import load_with_extensions
    from csms.extensions import discover

    s, configured = load_with_extensions(str(ROOT / "config.example.toml"), discover())
    sections = {ext.name: config for ext, config in configured}
    assert set(sections) == {"ocpi", "adhoc", "smart"}
    assert sections["adhoc"] is None  # ad hoc charging is off until the operator turns it on
    ocpi = sections["ocpi"]
    assert ocpi.offline_after == 300 and ocpi.tariffs[0].id == "AC-STANDARD"
    assert s.mobie_mode
    assert s.ocpp.port == 9000 and s.http.port == 8080
    assert s.ocpp.heartbeat_interval == 120
    assert s.ocpp.meter_value_sample_interval == 60
    assert s.ocpp.path_prefix == "/ocpp"
    assert s.database_path.name == "csms.sqlite3"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"CSMS_OCPP__METER_VALUE_SAMPLE_INTERVAL": "301"}, "ocpp.meter_value_sample_interval"),
        ({"CSMS_OCPP__HEARTBEAT_INTERVAL": "300"}, "ocpp.heartbeat_interval"),
        ({"CSMS_OCPP__PORT": '"nine"'}, "ocpp.port"),
        ({"CSMS_OCPP__HEARTBEAT_INTERVL": "10"}, "ocpp.heartbeat_intervl"),
        ({"CSMS_DATABASE__SYNCHRONOUS": '"OFF"'}, "database.synchronous"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(None, env)
    assert key in str(e.value)


def test_lower_intervals_are_accepted_and_mobie_mode_can_be_turned_off() -> None:
    s = load_settings(None, {"CSMS_OCPP__HEARTBEAT_INTERVAL": "5"})
    assert s.ocpp.heartbeat_interval == 5
    s = load_settings(
        None, {"CSMS_MOBIE_MODE": "false", "CSMS_OCPP__METER_VALUE_SAMPLE_INTERVAL": "900"}
    )
    assert s.ocpp.meter_value_sample_interval == 900


def test_cli_exits_2_on_a_bad_config_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('data_dir = "d"\n[ocpp]\nmeter_value_sample_interval = 900\n')
    proc = subprocess.run(
        [sys.executable, "-m", "csms.cli", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "ocpp.meter_value_sample_interval" in proc.stderr
    assert not (tmp_path / "d").exists(), "nothing may be started or created"


def test_cli_exits_2_on_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[ocpp\n")
    for path in (cfg, tmp_path / "missing.toml"):
        proc = subprocess.run(
            [sys.executable, "-m", "csms.cli", "run", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2, proc.stderr
        assert str(path) in proc.stderr


def test_hardening_settings_have_safe_defaults_and_bounds() -> None:
    s = load_settings(None, {})
    assert (s.http.header_timeout, s.http.read_timeout) == (10.0, 30.0)
    assert (s.http.idle_timeout, s.http.write_timeout) == (60.0, 30.0)
    assert (s.http.max_connections, s.http.max_connections_per_address) == (512, 64)
    assert s.ocpp.max_unknown_stations == 1000
    assert s.ocpp.max_meter_values_per_transaction == 100_000
    assert s.api.max_command_timeout == 300.0
    for key, value in (
        ("CSMS_HTTP__HEADER_TIMEOUT", "0"),
        ("CSMS_HTTP__IDLE_TIMEOUT", "-1"),
        ("CSMS_HTTP__MAX_CONNECTIONS", "0"),
        ("CSMS_OCPP__MAX_UNKNOWN_STATIONS", "0"),
        ("CSMS_API__MAX_COMMAND_TIMEOUT", "0"),
    ):
        name = key[len("CSMS_") :].lower().replace("__", ".")
        with pytest.raises(ConfigError, match=name):
            load_settings(None, {key: value})


def test_an_extension_s_own_variables_are_not_configuration() -> None:
    env = {
        "CSMS_ADHOC_STRIPE_SECRET_KEY": "sk_test_abcdefgh12345678",
        "CSMS_OCPP__HEARTBEAT_INTERVAL": "90",
    }
    s = load_settings(None, env, extensions=["adhoc", "ocpi"])
    assert s.ocpp.heartbeat_interval == 90
    # without the extension, the same name is an unknown key, as before
    with pytest.raises(ConfigError, match="adhoc_stripe_secret_key"):
        load_settings(None, env)
