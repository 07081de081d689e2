"""The README's systemd install, run as written into a scratch root, checked as the service.

The configuration block is extracted from README.md (after its marker comment) and executed with
`DESTDIR` set to a scratch root; `check-config` then runs as an unprivileged user with the
environment file's variables, as systemd starts the service under `DynamicUser=`.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.endpoint import is_loopback
from daemon.config import EXIT_CONFIG_ERROR, load
from tests.systemd_support import (
    CODE_STEP,
    CONFIG_STEP,
    ENV_EXAMPLE,
    PRODUCTION_CONFIG,
    REPO,
    UNIT,
    documented_block,
    documented_venv,
    environment_file,
    exec_start,
    installs,
    unit_settings,
)

NOBODY = 65534  # stands in for the unit's dynamic user: no group, no file of its own
SETPRIV = shutil.which("setpriv")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SYSTEMCTL = shutil.which("systemctl")
HOST_UNITS = Path("/usr/lib/systemd/system")
# the skeleton of a Debian root: directories that exist before anything is installed
SKELETON = ("etc/systemd/system", "opt", "usr/lib/systemd")
SECRET_KEYS = ("api_key", "client_secret", "app_secret", "token", "database_url")


BASH = shutil.which("bash") or "/bin/bash"


def as_the_service_user(argv: list[str]) -> list[str]:
    """`argv` run as NOBODY with no supplementary group (setpriv; the test runs as root)."""
    assert SETPRIV is not None
    return [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


def stand_in_python() -> str | None:
    """A Python of this test's version that any user may run (the test's own may sit in /root)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if Path(candidate).exists():
            return candidate
    return None


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None,
    reason="installs into a scratch root and runs as another user: needs root and setpriv",
)
needs_python = pytest.mark.skipif(
    stand_in_python() is None,
    reason=f"no system Python {sys.version_info.major}.{sys.version_info.minor} for the service "
    "user to run channeld with",
)


def stand_in_for_step_one(venv: Path) -> None:
    """Step 1's virtual environment, built offline: channeld and its packages from this test's.

    Step 1 installs from the package index; here a virtual environment of a system Python the
    service user can run imports the packages of the environment running this test.
    """
    python = stand_in_python()
    assert python is not None
    subprocess.run(
        [python, "-m", "venv", "--without-pip", str(venv)], umask=0o022, check=True, timeout=60
    )
    (site_packages,) = (venv / "lib").glob("python*/site-packages")
    pth = site_packages / "channeld-under-test.pth"
    pth.write_text(f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n")
    channeld = venv / "bin" / "channeld"
    channeld.write_text(
        f"#!{venv}/bin/python\nimport sys\nfrom daemon.cli import main\nsys.exit(main())\n"
    )
    for path in (pth, channeld):
        path.chmod(0o755)


def install(block: str) -> Path:
    """A scratch root with the block run into it, under a hostile umask (modes must be explicit)."""
    root = Path(tempfile.mkdtemp(prefix="channeld-root-"))
    root.chmod(0o755)  # / itself; mkdtemp makes it private
    for directory in SKELETON:
        path = root
        for part in Path(directory).parts:
            path /= part
            path.mkdir(exist_ok=True)
            path.chmod(0o755)
    stand_in_for_step_one(root / documented_venv().lstrip("/"))
    subprocess.run(
        [BASH, "-euo", "pipefail", "-c", block],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "DESTDIR": str(root)},
        umask=0o077,
        check=True,
        timeout=60,
    )
    return root


@pytest.fixture
def scratch_roots() -> Iterator[list[Path]]:
    roots: list[Path] = []
    yield roots
    for root in roots:
        shutil.rmtree(root)


def check_config_as_the_service(root: Path) -> subprocess.CompletedProcess[str]:
    """`channeld check-config` from the unit's ExecStart, as the service's user would run it."""
    argv = exec_start()
    assert argv[1] == "run", argv
    executable, config = root / argv[0].lstrip("/"), root / argv[-1].lstrip("/")
    env_file = unit_settings(UNIT.read_text())["EnvironmentFile"][0].removeprefix("-")
    # systemd reads EnvironmentFile= as root, then drops to the dynamic user
    environ = {"PATH": "/usr/bin:/bin", "STATE_DIRECTORY": "/var/lib/channeld"}
    environ |= environment_file(root / env_file.lstrip("/"))
    return subprocess.run(
        as_the_service_user([str(executable), "check-config", "--config", str(config)]),
        capture_output=True,
        text=True,
        env=environ,
        cwd="/",
        check=False,
        timeout=60,
    )


# -- the documented steps agree with the unit -------------------------------------------------


def test_the_unit_runs_what_the_readme_installs() -> None:
    argv = exec_start()
    steps = installs(documented_block(CONFIG_STEP))
    assert argv[0] == f"{documented_venv()}/bin/channeld"
    assert argv[1:] == ["run", "--config", steps["systemd/channeld.toml"][1]]
    settings = unit_settings(UNIT.read_text())
    assert settings["EnvironmentFile"] == ["-" + steps["systemd/channeld.env.example"][1]]
    assert steps["systemd/channeld.service"][1] == "/etc/systemd/system/channeld.service"
    documentation = settings["Documentation"][0].removeprefix("file://")
    assert installs(documented_block(CODE_STEP))["README.md"][1] == documentation


def test_the_readme_installs_the_config_readable_and_the_secrets_not() -> None:
    steps = installs(documented_block(CONFIG_STEP))
    # the dynamic user reads the config; only systemd (root) reads the environment file
    assert steps["systemd/channeld.toml"][0] == "0644"
    assert steps["systemd/channeld.env.example"][0] == "0600"


# -- the production config --------------------------------------------------------------------


def test_production_config_is_fit_for_production() -> None:
    settings = load(PRODUCTION_CONFIG, environment_file(ENV_EXAMPLE))
    assert not settings.emulator.enabled
    assert settings.channels == []
    assert is_loopback(settings.admin.host)
    assert settings.agents["default"].type == "openai"


def test_production_config_holds_no_secret() -> None:
    # commented blocks included: uncommenting one must not put a secret into a 0644 file
    pattern = re.compile(rf"^[#\s]*({'|'.join(SECRET_KEYS)})\s*=\s*\"([^\"]*)\"", re.MULTILINE)
    found = pattern.findall(PRODUCTION_CONFIG.read_text(encoding="utf-8"))
    assert {key for key, _ in found} >= {"api_key", "client_secret", "app_secret"}
    for key, value in found:
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*\}", value), f"{key} = {value!r}"


@pytest.mark.parametrize("platform", ["dingtalk", "feishu"])
def test_each_commented_channel_works_once_uncommented(tmp_path: Path, platform: str) -> None:
    text = PRODUCTION_CONFIG.read_text(encoding="utf-8")
    block = re.search(rf"# \[\[channels\]\]\n# id = \"{platform}-main\"\n(# .*\n)+", text)
    assert block, f"no commented {platform} channel block"
    enabled = text.replace(block.group(0), re.sub(r"^# ", "", block.group(0), flags=re.M))
    path = tmp_path / "channeld.toml"
    path.write_text(enabled, encoding="utf-8")
    # its variables are the ones channeld.env offers to fill in
    variables = re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", block.group(0))
    offered = re.findall(r"^# ([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert variables and set(variables) <= set(offered)
    environ = environment_file(ENV_EXAMPLE) | {name: f"{name}-value" for name in variables}
    settings = load(path, environ)
    assert [c.type for c in settings.channels] == [platform]
    secret = {"dingtalk": "client_secret", "feishu": "app_secret"}[platform]
    value = getattr(settings.channels[0], secret).get_secret_value()
    assert value == f"{platform.upper()}_{secret.upper()}-value"


# -- the install, run --------------------------------------------------------------------------


@needs_root
@needs_python
def test_documented_install_passes_check_config_as_the_service_user(
    scratch_roots: list[Path],
) -> None:
    root = install(documented_block(CONFIG_STEP))
    scratch_roots.append(root)
    result = check_config_as_the_service(root)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout and "1 agent(s)" in result.stdout
    assert stat.S_IMODE((root / "etc/channeld/channeld.env").stat().st_mode) == 0o600


@needs_root
@needs_python
def test_the_old_root_only_config_is_caught(scratch_roots: list[Path]) -> None:
    # the install this replaced: a 0640 root:root config the dynamic user cannot read
    block = documented_block(CONFIG_STEP)
    old = block.replace("-m 0644 systemd/channeld.toml", "-m 0640 systemd/channeld.toml")
    assert old != block
    root = install(old)
    scratch_roots.append(root)
    result = check_config_as_the_service(root)
    assert result.returncode == EXIT_CONFIG_ERROR
    assert "Permission denied" in result.stderr


@needs_root
@needs_python
@pytest.mark.skipif(
    SYSTEMD_ANALYZE is None or SYSTEMCTL is None or not HOST_UNITS.is_dir(),
    reason="needs systemd-analyze, systemctl and the host's units (Debian package `systemd`)",
)
def test_installed_unit_verifies_and_enables(scratch_roots: list[Path]) -> None:
    root = install(documented_block(CONFIG_STEP))
    scratch_roots.append(root)
    # the targets the unit orders itself after come from the host
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    assert SYSTEMD_ANALYZE is not None and SYSTEMCTL is not None
    verified = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={root}", "channeld.service"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    # an unknown key or a bad value is only a warning (exit status 0): the output is the verdict
    assert verified.returncode == 0 and "channeld" not in verified.stdout + verified.stderr, (
        verified.stdout + verified.stderr
    )
    subprocess.run(
        [SYSTEMCTL, f"--root={root}", "enable", "channeld.service"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert (root / "etc/systemd/system/multi-user.target.wants/channeld.service").is_symlink()
