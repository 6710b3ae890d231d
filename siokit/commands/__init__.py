"""The registry of `siokit` subcommands, after pip's ``commands_dict``.

Each command is a module with ``main(argv: list[str]) -> int`` that owns its argument parser. Adding a
command is one module and one line here; modules are imported only when their command runs, so
`siokit plan` never imports the load generator or Flask.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple


class CommandInfo(NamedTuple):
    module: str
    summary: str


commands_dict: dict[str, CommandInfo] = {
    "plan": CommandInfo("siokit.commands.plan", "size a deployment for a target number of sockets"),
    "render": CommandInfo("siokit.commands.render", "render every managed file as Ansible would"),
    "local": CommandInfo("siokit.commands.local", "the loopback stack: Redis, uWSGI instances, nginx"),
    "load": CommandInfo("siokit.load.cli", "the load generator (siokit load --help)"),
    "bench": CommandInfo("siokit.lab.bench", "load + per-component measurements (siokit bench --help)"),
    "doctor": CommandInfo("siokit.commands.doctor", "check a live deployment against its plan and known pitfalls"),
}


def create_command(name: str) -> Callable[[list[str]], int]:
    """The ``main`` of command `name` (KeyError if there is none)."""
    main: Callable[[list[str]], int] = importlib.import_module(commands_dict[name].module).main
    return main
