"""Where a request may read and write: the service's roots, and inputs sent inline.

An exposed service must not become a file reader for its clients: inputs are read, and clips
written, only under ``--output-dir`` and the ``--shared-root`` directories (symlinks resolved
first, so a link inside a root cannot point out of it). The inline extension (see
``examples/protocol-extensions.md``) carries an input as a ``data:…;base64,`` URI instead of a path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

INPUT_KEYS = ("image", "audio")


def is_inline(value: Any) -> TypeGuard[str]:
    """A ``data:[<mime>];base64,<payload>`` URI (RFC 2397) rather than a path."""
    return isinstance(value, str) and value.startswith("data:") and ";base64," in value[:200]


def inline_bytes(value: str) -> bytes:
    """The payload of an inline input; ValueError when it is not base64."""
    try:
        return base64.b64decode(value.split(";base64,", 1)[1], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not valid base64 data ({exc})") from None


def inline_digest(value: str) -> str:
    """A short stable name for an inline input (a session's face is known by it, not by its bytes)."""
    return "inline-" + hashlib.sha256(value.encode("ascii", "replace")).hexdigest()[:16]


class Roots:
    """The directories a request may touch, resolved once at start-up."""

    def __init__(self, output_dir: Path, shared: Iterable[Path] = ()) -> None:
        self.dirs = tuple(dict.fromkeys(path.expanduser().resolve() for path in (output_dir, *shared)))

    def __contains__(self, path: Path) -> bool:
        real = path.expanduser().resolve()
        return any(real.is_relative_to(root) for root in self.dirs)

    def __str__(self) -> str:
        return ", ".join(str(root) for root in self.dirs)


def boundary_errors(inputs: Mapping[str, Any], config: Mapping[str, Any], roots: Roots) -> list[str]:
    """What a request asks to read or write outside the roots, and inline inputs that do not decode."""
    errors: list[str] = []
    hint = f"(this service reads and writes only under {roots}; start it with --shared-root DIR to add one)"
    for key in INPUT_KEYS:
        value = inputs.get(key)
        if is_inline(value):
            try:
                inline_bytes(value)
            except ValueError as exc:
                errors.append(f"Input {key} is inline but {exc}.")
        elif isinstance(value, str) and value:
            path = Path(value).expanduser()
            if path not in roots:
                errors.append(f"Input {key} is outside the service's directories: {path} {hint}")
            elif path.exists() and not path.resolve().is_file():
                errors.append(f"Input {key} is not a regular file: {path}")
    output_dir = config.get("output_dir")
    if isinstance(output_dir, str) and output_dir.startswith("/") and Path(output_dir) not in roots:
        errors.append(f"Configured output_dir is outside the service's directories: {output_dir} {hint}")
    return errors
