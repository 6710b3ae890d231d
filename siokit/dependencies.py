"""The kit's Python dependencies, read from pyproject.toml: the one list that `make venv`, the kit
role (Ansible's pip, through the filter siokit_python_dependencies) and the wheelhouse scripts
install. Exact versions stay in constraints.txt.

    python -m siokit.dependencies --extra uwsgi [--shell]
"""

from __future__ import annotations

import argparse
import shlex
import tomllib
from collections.abc import Sequence
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def python_dependencies(pyproject: Path = PYPROJECT, extras: Sequence[str] = ()) -> list[str]:
    """[project] dependencies, then those of each named optional extra, in file order."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise KeyError(f"no optional dependencies {unknown} in {pyproject} (has {sorted(optional)})")
    deps = list(project["dependencies"])
    for extra in extras:
        deps += [d for d in optional[extra] if d not in deps]
    return deps


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m siokit.dependencies", description=__doc__.split("\n\n")[0])
    ap.add_argument("--extra", action="append", default=[], help="also this optional extra (e.g. uwsgi)")
    ap.add_argument("--shell", action="store_true", help="one line, each requirement quoted for a shell")
    args = ap.parse_args(argv)
    deps = python_dependencies(extras=args.extra)
    print(" ".join(shlex.quote(d) for d in deps) if args.shell else "\n".join(deps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
