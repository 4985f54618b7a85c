"""`csms check` and `csms migrate` on a real SQLite data directory, through the real command
line: check changes nothing, migrate applies every component's migrations (the OCPI
bridge's too, when it is configured), and no password of a database URL is ever printed."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from csms.db.base import migrations

OCPI = '[ocpi]\nparty_id = "CPO"\nbusiness_name = "Operador de Teste"\n'


def _csms(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSMS_")}
    return subprocess.run(
        [sys.executable, "-m", "csms.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=config.parent,
    )


def _config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "csms.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n{extra}')
    return config


def _latest(package: str) -> int:
    return max(v for v, _, _ in migrations(package, "sqlite"))


def test_check_changes_nothing_then_migrate_applies_and_check_agrees(tmp_path: Path) -> None:
    config = _config(tmp_path)
    database = tmp_path / "data" / "csms.sqlite3"
    csms_latest = _latest("csms.migrations")

    checked = _csms(config, "check")
    assert checked.returncode == 0, checked.stderr
    assert f"database: sqlite {database}" in checked.stdout
    assert "no database yet" in checked.stdout
    assert not database.exists(), "a check must not make the database"

    migrated = _csms(config, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert f"database: sqlite {database}" in migrated.stdout
    assert f"schema csms: version {csms_latest}" in migrated.stdout
    conn = sqlite3.connect(database)
    try:
        applied = conn.execute(
            "SELECT version FROM schema_migrations WHERE component = 'csms' ORDER BY version"
        ).fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert [v for (v,) in applied] == list(range(1, csms_latest + 1))
    assert {"stations", "transactions", "web_users"} <= tables

    checked = _csms(config, "check")
    assert checked.returncode == 0, checked.stderr
    assert f"schema csms: version {csms_latest} of {csms_latest}\n" in checked.stdout
    assert "to apply" not in checked.stdout

    again = _csms(config, "migrate")  # nothing left to do: the same answer
    assert again.returncode == 0 and again.stdout == migrated.stdout


def test_check_names_migrations_still_to_apply(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert _csms(config, "migrate").returncode == 0
    latest = _latest("csms.migrations")
    conn = sqlite3.connect(tmp_path / "data" / "csms.sqlite3")
    with conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = ?", (latest,))
    conn.close()
    checked = _csms(config, "check")
    assert checked.returncode == 0, checked.stderr
    assert f"schema csms: version {latest - 1} of {latest}, 1 to apply" in checked.stdout


def test_migrate_applies_the_ocpi_bridge_tables_when_it_is_configured(tmp_path: Path) -> None:
    config = _config(tmp_path, OCPI)
    migrated = _csms(config, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    ocpi_latest = _latest("ocpi_bridge.migrations")
    assert f"schema ocpi: version {ocpi_latest}" in migrated.stdout
    checked = _csms(config, "check")
    assert f"schema ocpi: version {ocpi_latest} of {ocpi_latest}\n" in checked.stdout


def test_a_database_url_is_shown_without_its_password(tmp_path: Path) -> None:
    # nothing listens on port 1: the check names the server and fails to reach it
    url = "postgresql://csms:s3cr3t-pw@127.0.0.1:1/csms"
    config = _config(tmp_path, f'[database]\nurl = "{url}"\n')
    for command in ("check", "migrate"):
        done = _csms(config, command)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "database: postgresql postgresql://csms:***@127.0.0.1:1/csms" in done.stdout
        assert re.search(r"cannot (read|migrate) the database", done.stderr)
        assert "s3cr3t" not in done.stdout + done.stderr


def test_check_config_still_checks_only_the_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    done = _csms(config, "check-config")
    assert done.returncode == 0 and done.stdout == f"{config}: OK\n"
    assert not (tmp_path / "data").exists()
