"""The shipped unit: its contract with the daemon, `systemd-analyze verify`, a low exposure."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import config
from daemon.config import EXIT_CONFIG_ERROR, DaemonSection
from tests.systemd_support import ENV_EXAMPLE, PRODUCTION_CONFIG, UNIT, unit_settings

# the unit rates 1.2 today; a change that loosens the sandbox past this fails here
MAX_EXPOSURE = 2.0
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian package `systemd`)",
)


def runnable_copy(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart on an executable that exists here; verify checks that it does."""
    venv_channeld = Path(sys.executable).parent / "channeld"
    executable = venv_channeld if venv_channeld.exists() else Path(sys.executable)
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={executable}", text, flags=re.MULTILINE)
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    return copy


def verify(unit: Path) -> list[str]:
    """The complaints `systemd-analyze verify` has about one unit file."""
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # An unknown key or a bad value is only a warning (exit status 0): stderr is the verdict.
    lines = [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line]
    if result.returncode != 0:
        lines.append(f"exit status {result.returncode}: {result.stderr.strip()}")
    return lines


def exposure(unit: Path) -> float:
    """The overall exposure `systemd-analyze security --offline=true` gives the unit file."""
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_unit_has_the_lifecycle_contract() -> None:
    settings = unit_settings(UNIT.read_text())
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] == ["30"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["RestartPreventExitStatus"] == ["11"]
    assert settings["StateDirectory"] == ["channeld"]
    assert settings["LoadCredential"] == ["channeld-secret-key"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert "@system-service" in settings["SystemCallFilter"]
    # SIGKILL must not cut the graceful drain short.
    graceful = DaemonSection.model_fields["graceful_timeout"].default
    assert float(settings["TimeoutStopSec"][0]) > graceful


@needs_systemd_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    assert verify(runnable_copy(tmp_path, UNIT.read_text())) == []


def test_a_config_error_is_not_restarted() -> None:
    # the daemon's exit code for a bad config; restarting every 5 s would only spam the journal
    settings = unit_settings(UNIT.read_text())
    assert settings["RestartPreventExitStatus"] == [str(EXIT_CONFIG_ERROR)]


def test_state_lives_where_the_unit_lets_the_daemon_write(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = unit_settings(UNIT.read_text())
    # ProtectSystem=strict: the state directory is the only writable path, and private
    assert settings["ProtectSystem"] == ["strict"]
    assert "ReadWritePaths" not in settings
    assert settings["StateDirectoryMode"] == ["0700"]
    assert settings["UMask"] == ["0077"]
    state = Path("/var/lib") / settings["StateDirectory"][0]
    monkeypatch.setenv("STATE_DIRECTORY", str(state))  # what systemd exports for StateDirectory=
    daemon = DaemonSection()
    assert daemon.state_dir == state
    assert daemon.effective_database_url == f"sqlite+aiosqlite:///{state}/channeld.db"


@needs_systemd_analyze
def test_unit_exposure_is_low() -> None:
    assert exposure(UNIT) <= MAX_EXPOSURE


def test_env_example_loads() -> None:
    # Every variable it shows, commented out or not, must be one the daemon accepts, with the
    # production config it is installed beside.
    environ: dict[str, str] = {}
    for raw in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#? ?([A-Z][A-Z0-9_]*)=(.*)", raw)
        if match:
            environ[match.group(1)] = match.group(2)
    assert "LLM_API_KEY" in environ and "CHANNELD_ADMIN__TOKEN" in environ
    environ.pop("CHANNELD_SECRET_KEY")  # shown empty on purpose: the credential is preferred
    settings = config.load(PRODUCTION_CONFIG, environ)
    assert settings.admin.token is not None
    assert settings.daemon.graceful_timeout == 20
    assert "default" in settings.agents
