"""`siokit` command line: one dispatcher over the registry in siokit.commands."""

from __future__ import annotations

import sys

from siokit.commands import commands_dict, create_command


def _usage() -> str:
    width = max(map(len, commands_dict))
    lines = ["usage: siokit COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {info.summary}" for name, info in commands_dict.items()]
    lines += ["", "siokit COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in commands_dict:
        print(f"siokit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return create_command(name)(rest)


if __name__ == "__main__":
    sys.exit(main())
