"""Extensions: packages that add to the central system without it knowing them.

The OCPI bridge is one. An extension is found through the ``csms.extensions`` entry point
group (declared in its package's metadata) and may:

- own a section of the configuration file (``[<name>]``), which it validates itself;
- add subcommands to the ``csms`` command line (``csms <name> ...``);
- attach, before csms starts, to the port it is given (:class:`~csms.ports.CsmsPort`, the
  one csms module an extension imports): subscribe to its event bus, read csms's data as
  frozen models, add HTTP routes, keep its own tables and migrations, add token sources,
  use the command port;
- run and stop with it.

csms never imports an extension; extensions import csms.
"""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .config import Settings
    from .ports import CsmsPort

GROUP = "csms.extensions"


class Extension(Protocol):
    name: str  # its configuration section and command-line word

    def add_commands(
        self, parser: argparse.ArgumentParser, common: argparse.ArgumentParser
    ) -> None:
        """Add subcommands under ``csms <name>``; each takes ``parents=[common]`` (--config)."""

    async def run_command(self, args: argparse.Namespace, settings: Settings) -> int:
        """Run one of its subcommands; return the exit code."""

    def validate_config(self, raw: dict[str, Any], settings: Settings) -> Any:
        """Validate its section; raise csms.config.ConfigError naming ``<name>.<key>``."""

    def attach(self, port: CsmsPort, config: Any) -> None:
        """Hook into a central system that has not started yet, through its port."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def discover() -> list[Extension]:
    """The installed extensions, each instantiated once."""
    found: list[Extension] = []
    for ep in entry_points(group=GROUP):
        factory = ep.load()
        found.append(factory())
    return sorted(found, key=lambda e: e.name)
