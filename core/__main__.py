"""Command line: ``python -m core <command> ...``.

Each command lives in its own module under ``core/cli/`` and exposes
``register(subparsers)``; this file only discovers and dispatches them, so
commands can be added without touching it.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from core import cli as _cli_pkg
from core.errors import DetectorError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="LaDeDa deepfake detector tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(_cli_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_cli_pkg.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DetectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
