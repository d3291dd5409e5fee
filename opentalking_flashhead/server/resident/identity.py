"""Which stream a request continues: our client names its session and chunk, everything else is stateless.

No heavy imports: the protocol layer calls this for every request.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

#: How our client names its session dirs (``storage.SESSION_PREFIX`` on the client side; the service
#: side never imports the client, so the name is written down twice, on each side of the wire).
SESSION_DIR_PREFIX = "session-"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_CHUNK = re.compile(r"[0-9]{1,12}")
_SEPARATOR = "\n"  # cannot occur in a name or in a header, so a key splits back unambiguously


def session_of(
    output_dir: str | None, image: str, header_session: str | None, header_chunk: str | None
) -> tuple[str | None, int | None]:
    """(session key, chunk index) from our client's X-FlashHead-Session/-Chunk headers, else from
    output_dir, laid out as our client lays it: <root>/<session>/<chunk> under an output root, or
    <shared>/<session>/out/<chunk> by default (session dir name starts with 'session-', chunk is
    digits; OmniRT drops our headers, so behind it the layout is all there is); the key
    includes the reference path so another face is another session. (None, None) = stateless.

    Both or neither: a session without a chunk index could not tell a retry from the next chunk.
    """
    name, chunk = _from_headers(header_session, header_chunk) or _from_output_dir(output_dir) or (None, None)
    if name is None or chunk is None:
        return None, None
    return f"{name}{_SEPARATOR}{image}", chunk


def session_name(key: str) -> str:
    """The session name our client used (what ``close_session`` is given) of a key from ``session_of``."""
    return key.partition(_SEPARATOR)[0]


def _from_headers(session: str | None, chunk: str | None) -> tuple[str, int] | None:
    if session is None or chunk is None or not _NAME.fullmatch(session) or not _CHUNK.fullmatch(chunk):
        return None
    return session, int(chunk)


def _from_output_dir(output_dir: str | None) -> tuple[str, int] | None:
    parts = PurePosixPath(output_dir).parts if output_dir else ()
    if len(parts) >= 3 and parts[-2] == "out":
        parts = parts[:-2] + parts[-1:]
    if len(parts) < 2:
        return None
    name, chunk = parts[-2], parts[-1]
    if not name.startswith(SESSION_DIR_PREFIX) or not _NAME.fullmatch(name) or not _CHUNK.fullmatch(chunk):
        return None
    return name, int(chunk)
