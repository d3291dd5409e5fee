"""``opentalking-flashhead``: the command line. Parsing and dispatch only; each command lives in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _plugins(args: argparse.Namespace) -> int:
    from opentalking_flashhead.host.report import format_report, plugin_report

    print(format_report(plugin_report(), args.json))
    return 0


def _serve_standin(args: argparse.Namespace) -> int:
    from opentalking_flashhead.standin.serve import serve

    serve(
        args.host,
        args.port,
        args.output_dir.resolve(),
        api_key_file=args.api_key_file,
        latency=args.latency,
        capacity=args.capacity,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opentalking-flashhead", description=__doc__.split(":")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    plugins = commands.add_parser("plugins", help="list the OpenTalking plugins this environment provides")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(run=_plugins)

    standin = commands.add_parser(
        "serve-standin", help="serve a stand-in FlashHead service (OmniRT's protocol, drawn frames, no GPU)"
    )
    standin.add_argument("--host", default="127.0.0.1")
    standin.add_argument("--port", type=int, default=8766)
    standin.add_argument("--output-dir", type=Path, default=Path("/tmp/flashhead-standin-out"))
    standin.add_argument("--api-key-file", type=Path, help="accept only the keys in this file (one per line)")
    standin.add_argument("--latency", type=float, default=0.0, help="seconds each generation takes at least")
    standin.add_argument("--capacity", type=int, default=1, help="generations that run at once")
    standin.set_defaults(run=_serve_standin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
