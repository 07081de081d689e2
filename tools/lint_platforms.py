"""import-linter contracts over the platform packages, found in the import graph rather than listed.

A platform package is a subpackage of `channels` with a `platform` module: `channels/<name>/` with
its registry entry `platform.py`. An emulator package is `channels.emulator` or any
`channels.<name>.emulator`, of a platform or not. The contracts in pyproject.toml name no
platform, so a new platform's folder is covered the moment it exists. Each contract here hands
the packages it found to one of import-linter's own contracts (forbidden, independence), which
checks them and reports each offending import with its importer, what it imports and the line.
`make lint` runs them through `lint-imports`; tests/test_lint_contracts.py shows that each bites.
"""

from __future__ import annotations

import abc
from typing import Any, cast

from grimp import ImportGraph
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.independence import IndependenceContract
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

CORE = "channels"  # the package whose subpackages are platforms


def platform_packages(graph: ImportGraph) -> list[str]:
    """`channels.<name>` for every subpackage of `channels` with a `platform` module, sorted."""
    return sorted(
        child for child in graph.find_children(CORE) if f"{child}.platform" in graph.modules
    )


def emulator_packages(graph: ImportGraph) -> list[str]:
    """`channels.emulator` (the emulators' shared base) and every `channels.<name>.emulator`."""
    candidates = {f"{CORE}.emulator"} | {f"{child}.emulator" for child in graph.find_children(CORE)}
    return sorted(candidates & graph.modules)


def _within(module: str, packages: list[str]) -> bool:
    return any(module == package or module.startswith(f"{package}.") for package in packages)


class _PlatformContract(Contract):
    """Checks one of import-linter's contracts, built over the platforms the graph holds."""

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        platforms = platform_packages(graph)
        if not platforms:
            # a contract over no package would be kept whatever the code imports
            raise ValueError(f"no platform package (a {CORE}.<name>.platform module) in the graph")
        rule = self._rule(graph, platforms)
        check = rule.check(graph, verbose)
        check.metadata["rule"] = rule  # the contract that found the imports renders them
        return check

    def render_broken_contract(self, check: ContractCheck) -> None:
        cast(Contract, check.metadata["rule"]).render_broken_contract(check)

    @abc.abstractmethod
    def _rule(self, graph: ImportGraph, platforms: list[str]) -> Contract:
        """The built-in contract to check; it may change `graph`, this contract's own copy."""

    def _builtin(self, kind: type[Contract], **options: Any) -> Contract:
        return kind(name=self.name, session_options=self.session_options, contract_options=options)


class PlatformsNotImportedBy(_PlatformContract):
    """The `importers` import no module of a platform package themselves (the registry does)."""

    importers = fields.ListField(subfield=fields.StringField())

    def _rule(self, graph: ImportGraph, platforms: list[str]) -> Contract:
        return self._builtin(
            ForbiddenContract,
            source_modules=cast(list[str], self.importers),  # a field holds its parsed option
            forbidden_modules=platforms,
            # `daemon` reaches platforms through `channels.registry`, which imports every entry
            allow_indirect_imports="true",
        )


class PlatformsIndependent(_PlatformContract):
    """No platform package imports another, directly or through other modules."""

    def _rule(self, graph: ImportGraph, platforms: list[str]) -> Contract:
        return self._builtin(IndependenceContract, modules=platforms)


class PlatformsDoNotImport(_PlatformContract):
    """No module of a platform package outside its emulator imports `forbidden`, even indirectly."""

    forbidden = fields.ListField(subfield=fields.StringField())

    def _rule(self, graph: ImportGraph, platforms: list[str]) -> Contract:
        # An emulator is a test double and may use what it likes. Without the emulators in the
        # graph no chain runs through one either; who may import an emulator is EmulatorsApart's.
        for package in emulator_packages(graph):
            for module in {package} | graph.find_descendants(package):
                graph.remove_module(module)
        return self._builtin(
            ForbiddenContract,
            source_modules=platforms,
            forbidden_modules=cast(list[str], self.forbidden),
        )


class EmulatorsApart(_PlatformContract):
    """Only emulator packages and platforms' registry entries import an emulator package.

    A registry entry (`channels/<name>/platform.py`) imports its emulator inside a function, for
    `channeld emulate` and the demo of `channeld run`. Direct imports are all there is to check:
    with the entries' imports set aside, every chain into an emulator ends in a direct import that
    this contract forbids.
    """

    def _rule(self, graph: ImportGraph, platforms: list[str]) -> Contract:
        emulators = emulator_packages(graph)
        entries = {f"{platform}.platform" for platform in platforms}
        outside = sorted(m for m in graph.modules if not _within(m, emulators) and m not in entries)
        return self._builtin(
            ForbiddenContract,
            source_modules=outside,
            forbidden_modules=sorted(m for m in graph.modules if _within(m, emulators)),
            allow_indirect_imports="true",
            as_packages="false",  # each module on its own: the lists hold every module already
        )
