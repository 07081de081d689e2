"""Readers for the systemd material: the unit's settings, the README's install steps, the env file.

The README's install blocks are read from README.md itself (a ```sh block after a marker
comment), so the tests run and compare the documented text, not a copy of it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SYSTEMD_DIR = REPO / "systemd"
UNIT = SYSTEMD_DIR / "channeld.service"
PRODUCTION_CONFIG = SYSTEMD_DIR / "channeld.toml"
ENV_EXAMPLE = SYSTEMD_DIR / "channeld.env.example"
CODE_STEP = "systemd-install:code"  # step 1: the virtual environment
CONFIG_STEP = "systemd-install:config"  # step 2: configuration and unit


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, in order; systemd keys may repeat."""
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def exec_start() -> list[str]:
    """The unit's ExecStart= command line, split into words."""
    return shlex.split(unit_settings(UNIT.read_text())["ExecStart"][0])


def documented_block(marker: str) -> str:
    """The ```sh block that follows `<!-- marker -->` in README.md."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {re.escape(marker)} -->\n```sh\n(.*?)```", text, re.DOTALL)
    assert found, f"README.md has no ```sh block after <!-- {marker} -->"
    return found.group(1)


def documented_venv() -> str:
    """The virtual environment step 1 creates, without the $DESTDIR prefix."""
    found = re.search(r'-m venv "\$DESTDIR(\S+)"', documented_block(CODE_STEP))
    assert found, "step 1 no longer creates the virtual environment under $DESTDIR"
    return found.group(1)


def installs(block: str) -> dict[str, tuple[str, str]]:
    """`install -m MODE SOURCE "$DESTDIR/PATH"` lines of a block: source -> (mode, /PATH)."""
    found: dict[str, tuple[str, str]] = {}
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] != ["install"] or "-d" in words:
            continue
        assert words[-1].startswith("$DESTDIR/"), line
        found[words[-2]] = (words[words.index("-m") + 1], words[-1].removeprefix("$DESTDIR"))
    return found


def environment_file(path: Path) -> dict[str, str]:
    """KEY=value lines the way systemd's EnvironmentFile= reads them (comments, quotes)."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        # anything fancier (continuations, escapes) would need systemd's own parser: refuse it
        found = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"\\]*\"|'[^'\\]*'|[^\"'\\]*)", line)
        assert found, f"{path}: a line this test cannot parse like systemd: {raw!r}"
        name, value = found.groups()
        values[name] = value[1:-1] if value[:1] in "\"'" and len(value) > 1 else value
    return values
