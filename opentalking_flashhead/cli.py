"""``opentalking-flashhead``: the command line. Parsing and dispatch only; each command lives in its own module."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentalking_flashhead.errors import FlashHeadError
from opentalking_flashhead.settings import DEFAULT_SHARED_DIR


def _plugins(args: argparse.Namespace) -> int:
    from opentalking_flashhead.host.report import format_report, plugin_report

    print(format_report(plugin_report(), args.json))
    return 0


def _port_taken(args: argparse.Namespace) -> bool:
    """Say so, naming --port, before a service command prints that it listens."""
    from opentalking_flashhead.ports import listen_error

    busy = listen_error(args.host, args.port)
    if busy is not None:
        print(f"error: {busy}; stop what holds it, or choose another port with --port", file=sys.stderr)
    return busy is not None


def _serve_standin(args: argparse.Namespace) -> int:
    from opentalking_flashhead.server.serve import serve

    if _port_taken(args):
        return 1
    serve(
        args.host,
        args.port,
        args.output_dir.resolve(),
        shared_roots=args.shared_root or [Path(DEFAULT_SHARED_DIR)],
        api_key_file=args.api_key_file,
        latency=args.latency,
        capacity=args.capacity,
        fail_rate=args.fail_rate,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from opentalking_flashhead.server.resident.options import StartupError
    from opentalking_flashhead.server.serve_model import serve_model

    if _port_taken(args):
        return 1
    try:
        serve_model(
            _model_options(args),
            args.host,
            args.port,
            args.output_dir.resolve(),
            shared_roots=args.shared_root or [Path(DEFAULT_SHARED_DIR)],
            api_key_file=args.api_key_file,
            max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        )
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _model_options(args: argparse.Namespace) -> Any:
    """The ``ModelOptions`` of ``serve`` and ``worker`` from their shared model flags."""
    from opentalking_flashhead.server.resident.options import ModelOptions

    return ModelOptions(
        flashhead_repo=args.flashhead_repo,
        ckpt_dir=args.ckpt_dir,
        wav2vec_dir=args.wav2vec_dir,
        model_type=args.model_type,
        device=args.device,
        dtype=args.dtype,
        compile=not args.no_compile,
        max_sessions=args.max_sessions,
        session_ttl_sec=args.session_ttl,
    )


def _worker(args: argparse.Namespace) -> int:
    from opentalking_flashhead.server.resident.options import StartupError
    from opentalking_flashhead.server.worker import serve_worker

    try:
        serve_worker(_model_options(args), *args.listen)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_service_flags(command: argparse.ArgumentParser, output_dir: str) -> None:
    """The flags every service command shares: where it listens, reads, writes, and whom it serves."""
    command.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    command.add_argument("--port", type=int, default=8766, help="port to listen on (default 8766)")
    command.add_argument(
        "--output-dir",
        type=Path,
        default=Path(output_dir),
        help=f"where clips are written unless a request names its own output_dir (default {output_dir})",
    )
    command.add_argument(
        "--shared-root",
        type=Path,
        action="append",
        help="storage shared with clients; inputs are read and clips written only under these and --output-dir "
        f"(repeatable; default {DEFAULT_SHARED_DIR}, the client's default)",
    )
    command.add_argument("--api-key-file", type=Path, help="accept only the keys in this file (one per line)")
    command.add_argument(
        "--max-body-mb", type=_positive_float, default=32.0, help="larger request bodies get 413 (default 32)"
    )


def _render(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile
    from contextlib import ExitStack

    from opentalking_flashhead.face import face_warnings, save_crop
    from opentalking_flashhead.render import configured_base_url, load_inputs, read_face, render_inputs
    from opentalking_flashhead.settings import env_name

    if args.preview_crop is not None:
        face = read_face(args.image)
        _warn(face_warnings(face))
        save_crop(face, args.preview_crop)
        print(f"{args.preview_crop}: the 512×512 square of {args.image} that the model animates")
        return 0
    if args.audio is None or args.output is None:
        raise ValueError("render needs AUDIO and -o OUT.mp4 (or --preview-crop PNG to see only the face's crop)")
    # Bad input is one line, before anything starts.
    inputs = load_inputs(args.audio, args.image, args.output, force=args.force)
    _warn(face_warnings(inputs.image))
    client_settings: dict[str, Any] = {}
    with ExitStack() as stack:
        base_url = args.base_url or configured_base_url()
        if not base_url:
            from opentalking_flashhead.server.serve import running_standin

            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flashhead-standin-")))
            shared = os.environ.get(env_name("shared_local_dir"), "").strip()
            roots = [scratch] + ([Path(shared)] if shared else [])
            base_url = stack.enter_context(running_standin(scratch, shared_roots=roots, capacity=args.jobs))
            if not os.environ.get(env_name("shared_local_dir"), "").strip():
                # Not the fixed default dir, which other users' processes on this machine share.
                client_settings = {"shared_local_dir": str(scratch), "shared_remote_dir": str(scratch)}
            print(
                f"No FlashHead service configured (--base-url, {env_name('base_url')} or an http(s) "
                f"{env_name('ws_url')}): rendering with a local "
                f"STAND-IN service at {base_url}. Its frames are drawn from the image, not generated by FlashHead.",
                file=sys.stderr,
            )
        summary = asyncio.run(
            render_inputs(inputs, jobs=args.jobs, progress=not args.quiet, base_url=base_url, **client_settings)
        )
    print(summary.line())
    return 0


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _doctor(args: argparse.Namespace) -> int:
    from opentalking_flashhead.doctor import run

    return run(args.timeout, **({"base_url": args.base_url} if args.base_url else {}))


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _positive_float(text: str) -> float:
    value = _float_or_nan(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number greater than 0, got {text!r}")
    return value


def _share(text: str) -> float:
    value = _float_or_nan(text)
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1, got {text!r}")
    return value


def _add_model_flags(command: argparse.ArgumentParser) -> None:
    """The model flags ``serve`` and ``worker`` share."""
    command.add_argument("--flashhead-repo", type=Path, required=True, help="your SoulX-FlashHead checkout")
    command.add_argument("--ckpt-dir", type=Path, required=True, help="the checkpoint dir (Model_Lite/, VAE_LTX/, …)")
    command.add_argument("--wav2vec-dir", type=Path, required=True, help="the wav2vec2-base-960h dir")
    command.add_argument(
        "--model-type", choices=("lite", "pro"), default="lite", help="which SoulX-FlashHead model (default lite)"
    )
    command.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    command.add_argument(
        "--dtype",
        choices=("bf16", "fp16", "fp32"),
        default="bf16",
        help="parameter dtype (default bf16; fp32 on a CPU)",
    )
    command.add_argument("--no-compile", action="store_true", help="skip torch.compile (faster start, slower slices)")
    command.add_argument("--max-sessions", type=_positive_int, default=8, help="sessions kept at once (default 8)")
    command.add_argument(
        "--session-ttl", type=_positive_float, default=300.0, help="seconds idle before a session ends (default 300)"
    )


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 0.0.0.0:50061)")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    from opentalking_flashhead import __version__

    parser = argparse.ArgumentParser(
        prog="opentalking-flashhead", description="SoulX-FlashHead for OpenTalking: render, check and serve."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plugins = commands.add_parser("plugins", help="list the OpenTalking plugins this environment provides")
    plugins.add_argument("--json", action="store_true", help="print the list as JSON instead of text")
    plugins.set_defaults(run=_plugins)

    render = commands.add_parser("render", help="render a speech to a talking-head MP4 through the FlashHead pipeline")
    render.add_argument(
        "audio", type=Path, nargs="?", help="speech: any audio file (WAV, MP3, FLAC, OGG; any rate or channels)"
    )
    render.add_argument("--image", type=Path, required=True, help="the face: a PNG or JPEG, ideally square")
    render.add_argument("-o", "--output", type=Path, help="the MP4 to write (its name must end in .mp4)")
    render.add_argument("--force", action="store_true", help="overwrite the output if it already exists")
    render.add_argument(
        "--base-url",
        help="the FlashHead service (default: $OPENTALKING_FLASHHEAD_BASE_URL, else an http(s) "
        "$OPENTALKING_FLASHHEAD_WS_URL, else a local stand-in)",
    )
    render.add_argument("--jobs", type=_positive_int, default=1, help="chunks in flight at once (default 1)")
    render.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    render.add_argument(
        "--preview-crop",
        type=Path,
        metavar="PNG",
        help="only write the 512x512 crop of --image that the model animates to PNG, and exit",
    )
    render.set_defaults(run=_render)

    doctor = commands.add_parser("doctor", help="check a FlashHead deployment part by part, with fixes")
    doctor.add_argument("--base-url", help="the FlashHead service to check (default: $OPENTALKING_FLASHHEAD_BASE_URL)")
    doctor.add_argument(
        "--timeout", type=_positive_float, default=30.0, help="seconds the probe generation may take (default 30)"
    )
    doctor.set_defaults(run=_doctor)

    standin = commands.add_parser(
        "serve-standin", help="serve a stand-in FlashHead service (OmniRT's protocol, drawn frames, no GPU)"
    )
    _add_service_flags(standin, "/tmp/flashhead-standin-out")
    standin.add_argument(
        "--latency", type=float, default=0.0, help="seconds each generation takes at least (default 0)"
    )
    standin.add_argument("--capacity", type=int, default=1, help="generations that run at once (default 1)")
    standin.add_argument(
        "--fail-rate",
        type=_share,
        default=0.0,
        help="share of generations that fail transiently, 0 to 1 (default 0)",
    )
    standin.set_defaults(run=_serve_standin)

    serve = commands.add_parser(
        "serve", help="serve SoulX-FlashHead resident (loaded once, sessions continuous) over OmniRT's protocol"
    )
    _add_model_flags(serve)
    _add_service_flags(serve, "/tmp/flashhead-out")
    serve.set_defaults(run=_serve)

    worker = commands.add_parser(
        "worker", help="serve SoulX-FlashHead resident as an OmniRT gRPC worker (requests via config.resident_target)"
    )
    _add_model_flags(worker)
    worker.add_argument("--listen", type=_host_port, required=True, help="HOST:PORT for gRPC (no auth)")
    worker.set_defaults(run=_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (kill, systemd, docker stop) takes Ctrl-C's path, so a stopped render or doctor
    # removes its session files and partial output just the same.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return args.run(args)
    except (FlashHeadError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
