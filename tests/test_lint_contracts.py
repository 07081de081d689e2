"""The import contracts over platforms (tools/lint_platforms.py) find the platform and emulator
packages themselves and bite: `lint-imports` with the project's own configuration, run over a
throwaway tree, reports each kind of forbidden import by name, and keeps what the rules allow."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

from channels import registry
from tools.lint_platforms import PlatformsIndependent, platform_packages

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# A project shaped like this one: two platforms (alpha with an emulator, beta without), the
# emulators' shared base, and channels/voice (a package with an emulator, not a platform).
# Everything here keeps the rules, including what they allow: daemon reaches the platforms
# through the registry, a registry entry imports its own emulator, an emulator uses agents, and
# the voice package uses storage and agents.
TREE = {
    "common/__init__.py": "",
    "common/errors.py": "",
    "agents/__init__.py": "",
    "agents/base.py": "from common import errors\n",
    "storage/__init__.py": "",
    "storage/engine.py": "from common import errors\n",
    "channels/__init__.py": "",
    "channels/platform.py": "",
    "channels/manager.py": "from channels import platform\n",
    "channels/answering.py": "from agents import base\n",
    "channels/registry.py": (
        "from channels.alpha import platform\nfrom channels.beta import platform\n"
    ),
    "channels/emulator/__init__.py": "",
    "channels/emulator/server.py": "",
    "channels/alpha/__init__.py": "",
    "channels/alpha/platform.py": (
        "def demo():\n    from channels.alpha.emulator import server\n    return server\n"
    ),
    "channels/alpha/provider.py": "from channels import manager\n",
    "channels/alpha/api.py": "",
    "channels/alpha/emulator/__init__.py": "",
    "channels/alpha/emulator/server.py": (
        "from channels.emulator import server\nfrom agents import base\n"
    ),
    "channels/beta/__init__.py": "",
    "channels/beta/platform.py": "",
    "channels/beta/provider.py": "from common import errors\n",
    "channels/voice/__init__.py": "",
    "channels/voice/endpoint.py": "from storage import engine\nfrom agents import base\n",
    "channels/voice/emulator/__init__.py": "from channels.voice import endpoint\n",
    "daemon/__init__.py": "",
    "daemon/app.py": "from channels import registry\n",
}


def contract_name(kind: str) -> str:
    """The name pyproject.toml gives the contract of type `kind`."""
    settings = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    names = [c["name"] for c in settings["contracts"] if c["type"] == kind]
    assert len(names) == 1, f"pyproject.toml has {len(names)} contracts of type {kind!r}"
    return str(names[0])


def lint_imports(cwd: Path, *config: str) -> subprocess.CompletedProcess[str]:
    # COLUMNS: import-linter's console wraps at 80 columns, splitting the lines asserted on
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *config],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def lint_tree(tmp_path: Path, changes: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the project's contracts over TREE with `changes` applied."""
    for name, text in {**TREE, **changes}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return lint_imports(tmp_path, str(PYPROJECT))


def test_what_the_rules_allow_is_kept(tmp_path: Path) -> None:
    """Registry, an entry's own emulator, an emulator using agents, voice using storage: kept."""
    result = lint_tree(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


VIOLATIONS = {
    "daemon names a platform": (
        "platforms_not_imported_by",
        {"daemon/cli.py": "from channels.alpha import provider\n"},
        ["daemon.cli -> channels.alpha.provider (l.1)"],
    ),
    "a platform imports another": (
        "platforms_independent",
        {"channels/beta/provider.py": "from channels.alpha import api\n"},
        ["channels.beta.provider -> channels.alpha.api (l.1)"],
    ),
    "a provider imports storage": (
        "platforms_do_not_import",
        {"channels/beta/provider.py": "from storage import engine\n"},
        ["channels.beta.provider -> storage.engine (l.1)"],
    ),
    "a provider reaches agents through the core": (
        "platforms_do_not_import",
        {"channels/alpha/provider.py": "from channels import manager, answering\n"},
        [
            "channels.alpha.provider -> channels.answering (l.1)",
            "channels.answering -> agents.base",
        ],
    ),
    "the core imports a platform's emulator": (
        "emulators_apart",
        {"channels/manager.py": "from channels.alpha.emulator import server\n"},
        ["channels.manager -> channels.alpha.emulator.server (l.1)"],
    ),
    "the daemon imports the emulators' base": (
        "emulators_apart",
        {"daemon/app.py": "from channels import registry\nfrom channels.emulator import server\n"},
        ["daemon.app -> channels.emulator.server (l.2)"],
    ),
    "voice imports its own emulator": (
        "emulators_apart",
        {"channels/voice/endpoint.py": "from channels.voice import emulator\n"},
        ["channels.voice.endpoint -> channels.voice.emulator (l.1)"],
    ),
    "a platform found by its folder alone": (
        "platforms_independent",
        {
            "channels/gamma/__init__.py": "",
            "channels/gamma/platform.py": "from channels import beta\n",
        },
        ["channels.gamma.platform -> channels.beta (l.1)"],
    ),
}


@pytest.mark.parametrize(("kind", "changes", "reported"), VIOLATIONS.values(), ids=VIOLATIONS)
def test_a_forbidden_import_breaks_its_contract_and_is_named(
    tmp_path: Path, kind: str, changes: dict[str, str], reported: list[str]
) -> None:
    """Exactly the contract the import breaks fails, naming importer, imported module and line."""
    result = lint_tree(tmp_path, changes)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract_name(kind)} BROKEN" in result.stdout
    assert "Contracts: 4 kept, 1 broken." in result.stdout
    for line in reported:
        assert line in result.stdout


def test_the_project_keeps_every_contract() -> None:
    """`make lint`'s import check over this repository."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = ("platforms_not_imported_by", "platforms_independent", "platforms_do_not_import")
    for kind in (*kinds, "emulators_apart"):
        assert f"{contract_name(kind)} KEPT" in result.stdout


def test_every_folder_of_modules_is_a_package() -> None:
    """lint-imports skips a folder without `__init__.py`: its imports would go unchecked."""
    settings = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    folders = (f for root in settings["root_packages"] for f in (ROOT / root).rglob("*"))
    bare = [
        str(folder.relative_to(ROOT))
        for folder in folders
        if any(folder.glob("*.py")) and not (folder / "__init__.py").exists()
    ]
    assert bare == []


def test_the_platform_packages_found_are_the_registered_platforms() -> None:
    """Every registered platform's folder is checked, and every folder checked is registered."""
    graph = grimp.build_graph("channels", cache_dir=None)
    registered = {p.config.__module__.rpartition(".")[0] for p in registry.platforms()}
    assert set(platform_packages(graph)) == registered


def test_a_graph_with_no_platform_is_refused() -> None:
    """A contract over no platform would be kept whatever the code imports: it refuses instead."""
    graph = grimp.ImportGraph()
    for module in ("channels", "channels.manager", "channels.voice", "channels.voice.endpoint"):
        graph.add_module(module)
    contract = PlatformsIndependent(
        name="independent", session_options={"root_packages": ["channels"]}, contract_options={}
    )
    with pytest.raises(ValueError, match="no platform package"):
        contract.check(graph, verbose=False)
