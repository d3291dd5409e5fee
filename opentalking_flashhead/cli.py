"""``opentalking-flashhead``: the command line. Parsing and dispatch only; each command lives in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _plugins(args: argparse.Namespace) -> int:
    from opentalking_flashhead.host.report import format_report, plugin_report

    print(format_report(plugin_report(), args.json))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opentalking-flashhead", description=__doc__.split(":")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    plugins = commands.add_parser("plugins", help="list the OpenTalking plugins this environment provides")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(run=_plugins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
