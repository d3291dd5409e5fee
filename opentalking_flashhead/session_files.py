"""One session's files in shared storage: its directory, lock, reference, chunk WAVs and outputs.

Shared storage may be a network mount, where a write or a removal can take long: every file
operation here runs in a worker thread (``asyncio.to_thread``), never on the event loop that
serves the host's other sessions. A job the client gave up on may still write its clip after the
session closed; :meth:`SessionFiles.remove` keeps watching for that. Every removal goes through
:mod:`.confined`, so a symlink the service put below a root is removed, never followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from opentalking_flashhead import confined, storage
from opentalking_flashhead.artifacts import PathMap
from opentalking_flashhead.confined import Place
from opentalking_flashhead.errors import ClipUnreadable, ConfigError
from opentalking_flashhead.reference import Reference
from opentalking_flashhead.settings import Settings, env_name

log = logging.getLogger(__name__)

#: How often :meth:`SessionFiles.remove` looks again, and for how long at least: a job the client
#: gave up on after a short timeout may still run its course on the service.
LINGER_POLL_SEC = 1.0
LINGER_MIN_SEC = 60.0

_lingering: set[asyncio.Task[None]] = set()


@dataclass
class SessionFiles:
    """What one session keeps in shared storage, and the lock that tells other processes it is live."""

    name: str
    #: Below the shared root: nothing below it is reached through a symlink the service made.
    place: Place
    lock: int
    #: The reference image as we see it.
    reference: Path
    #: Where the session's chunks get their own output dirs, as the service sees it and (when a
    #: mapping covers it) as we do.
    output_remote: str
    output_local: Place | None
    #: Chunks whose output dirs are still being written.
    inflight: set[str] = field(default_factory=set)

    @classmethod
    async def create(cls, settings: Settings, paths: PathMap, face: Reference) -> SessionFiles:
        """Make the session's directory with the reference in it; on any failure, leave nothing behind."""
        return await asyncio.to_thread(cls._create, settings, paths, face)

    @classmethod
    def _create(cls, settings: Settings, paths: PathMap, face: Reference) -> SessionFiles:
        name = f"{storage.SESSION_PREFIX}{uuid.uuid4().hex[:12]}"
        place = Place(settings.shared_local_dir, PurePosixPath(name))
        root = settings.output_root
        output_remote = f"{root}/{name}" if root else paths.to_remote(place.path / "out")
        storage.sweep_stale_sessions(settings.shared_local_dir)
        output_root = paths.locate(root) if root else None
        if output_root is not None:
            storage.sweep_stale_sessions(output_root.path, locks=settings.shared_local_dir)
        lock: int | None = None
        try:
            place.path.mkdir(parents=True)
            lock = storage.lock_session(place)
            reference = place / f"reference{face.suffix}"
            confined.write_file(reference, face.data)
            if settings.save_dir is not None:
                settings.save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if lock is not None:
                os.close(lock)
            confined.remove(place)
            raise ConfigError(
                f"cannot write the session's files in {place}: {exc.strerror}; set {env_name('shared_local_dir')} "
                f"(and {env_name('save_dir')}) to writable directories"
            ) from exc
        return cls(name, place, lock, reference.path, output_remote, paths.locate(output_remote))

    def output_dir(self, chunk: str) -> str:
        """The chunk's own output dir, as the service sees it."""
        return f"{self.output_remote}/{chunk}"

    async def write_audio(self, chunk: str, encoded: bytes) -> Path:
        """The chunk's WAV in the session's directory; a full or read-only disk, or the directory
        removed under us, is a :class:`ConfigError` naming the setting, never a bare ``OSError``."""
        place = self.place / f"chunk-{chunk}.wav"
        try:
            await asyncio.to_thread(confined.write_file, place, encoded)
            return place.path
        except OSError as exc:
            raise ConfigError(
                f"cannot write the chunk's audio in {self.place}: {exc.strerror}; free space there, "
                f"or set {env_name('shared_local_dir')} to a writable directory the service shares"
            ) from exc

    async def chunk_done(self, chunk: str, wav: Path | None) -> None:
        """Remove the chunk's WAV, and the output dirs of every chunk no longer in flight.

        That includes what a job abandoned at its deadline wrote later, so shared storage never
        grows across a session.
        """
        self.inflight.discard(chunk)
        await asyncio.to_thread(self._remove_chunk, wav, frozenset(self.inflight))

    def _remove_chunk(self, wav: Path | None, keep: frozenset[str]) -> None:
        if wav is not None:
            confined.remove(self.place / wav.name)
        if self.output_local is not None:
            confined.remove_children(self.output_local, keep=keep)

    async def save_clip(self, clip: Path, save_dir: Path, chunk: str) -> None:
        """A copy of the chunk's clip in ``save_dir`` (``SAVE_DIR``), named for the session and chunk."""
        try:
            await asyncio.to_thread(shutil.copyfile, clip, save_dir / f"{self.name}-{chunk}.mp4")
        except OSError as exc:
            raise ConfigError(_no_room(exc, env_name("save_dir"))) from exc

    async def remove(self, linger: float) -> None:
        """Remove everything the session put on disk and release its lock; then, for ``linger``
        seconds in the background, remove what its abandoned jobs write later (the watch ends with
        the event loop at the latest)."""
        places = [self.place] + ([self.output_local] if self.output_local else [])
        try:
            await asyncio.to_thread(_remove_all, places)
        finally:  # even when the close is cancelled meanwhile: the thread removes them all the same
            if linger > 0:
                task = asyncio.get_running_loop().create_task(_watch(places, time.monotonic() + linger))
                _lingering.add(task)
                task.add_done_callback(_lingering.discard)
            os.close(self.lock)


def _remove_all(places: list[Place]) -> list[Place]:
    """The places that were there and are gone now."""
    return [place for place in places if confined.remove(place)]


async def _watch(places: list[Place], until: float) -> None:
    while time.monotonic() < until:
        await asyncio.sleep(LINGER_POLL_SEC)
        for place in await asyncio.to_thread(_remove_all, places):
            log.info("removed %s, written by a FlashHead job after its session closed", place)


@contextlib.contextmanager
def private_dir() -> Iterator[Path]:
    """A temporary directory of this process for one clip, outside shared storage, where the
    service cannot swap anything; our temp disk failing while the clip is copied there (full,
    read-only) is retried like a hiccup."""
    try:
        with tempfile.TemporaryDirectory(prefix="flashhead-clip-") as private:
            yield Path(private)
    except OSError as exc:
        raise ClipUnreadable(_no_room(exc, "TMPDIR"), retryable=True) from exc


def _no_room(exc: OSError, setting: str) -> str:
    where = exc.filename or f"the directory {setting} names"
    return f"cannot write {where}: {exc.strerror}; free space there, or set {setting} to a writable directory"
