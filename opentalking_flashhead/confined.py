"""Files below a trusted root, reached without following any symlink below it.

The service shares our storage and may put a symlink in place of any directory it can write, at
any moment. A configured root is trusted (a user may point it through a symlink); below it every
component is opened with ``O_NOFOLLOW`` relative to its parent's descriptor, so checking a path
and using it are one system call each and no swap can send a read or a removal elsewhere.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: O_NONBLOCK: a FIFO in place of a clip must not block the open.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class Place:
    """``rel`` below the trusted ``root``: only ``root`` itself may be reached through a symlink."""

    root: Path
    rel: PurePosixPath = field(default_factory=PurePosixPath)

    def __post_init__(self) -> None:
        if self.rel.is_absolute() or ".." in self.rel.parts:
            raise ValueError(f"{self.rel} is not a path below {self.root}")

    def __truediv__(self, name: str) -> Place:
        return Place(self.root, self.rel / name)

    @property
    def path(self) -> Path:
        """The same place as a plain path: for messages, and for the service, which follows its links."""
        return self.root / self.rel

    def __str__(self) -> str:
        return str(self.path)


@contextmanager
def opened_dir(place: Place) -> Iterator[int]:
    """A descriptor of the directory ``place``; ``OSError`` (ELOOP, ENOTDIR) when a component below
    the root is a symlink or not a directory."""
    fd = os.open(place.root, _DIR)
    try:
        for part in place.rel.parts:
            child = os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def read_file(place: Place, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the regular file ``place`` (one more tells the caller it is too
    big); ``OSError`` when it, or a directory on the way, is a symlink or not what it should be."""
    with opened_dir(Place(place.root, place.rel.parent)) as parent:
        fd = os.open(place.rel.name, _FILE, dir_fd=parent)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(place))
        return file.read(min(info.st_size, limit) + 1)  # no buffer of ``limit`` bytes for a small clip


def write_file(place: Place, data: bytes | memoryview) -> None:
    """Write the file ``place`` atomically: a hidden sibling first, then a rename, so a reader over
    a network mount never sees half of it; both within its directory's descriptor."""
    partial = f".{place.rel.name}.partial"
    with opened_dir(Place(place.root, place.rel.parent)) as parent:
        fd = os.open(
            partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=parent
        )
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(partial, place.rel.name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with suppress(OSError):
                os.unlink(partial, dir_fd=parent)
            raise


def remove(place: Place) -> bool:
    """Remove the entry ``place``: a tree, a file, or a symlink itself (never what it points to).
    False when there was nothing to remove, or no way to it without following a symlink."""
    try:
        with opened_dir(Place(place.root, place.rel.parent)) as parent:
            return _remove_entry(parent, place.rel.name)
    except OSError:
        return False


def remove_children(place: Place, keep: Collection[str] = ()) -> None:
    """Empty the directory ``place`` but for the entries named in ``keep``; whatever stands in its
    place when it is no directory (a symlink, a file) is removed instead."""
    try:
        with opened_dir(place) as fd:
            for name in os.listdir(fd):
                if name not in keep:
                    _remove_entry(fd, name)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            remove(place)


def _remove_entry(dir_fd: int, name: str) -> bool:
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(mode):
        _remove_tree(dir_fd, name)
    else:
        with suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
    return True


def _remove_tree(dir_fd: int, name: str) -> None:
    """Remove the directory ``name`` below ``dir_fd`` with all it holds, following no symlink.

    ``os.fwalk`` checks each directory again after opening it, so a symlink swapped in meanwhile is
    removed as a link, never walked (``shutil.rmtree`` takes ``dir_fd`` only from Python 3.11).
    """
    with suppress(OSError):
        for _, dirs, files, fd in os.fwalk(name, topdown=False, dir_fd=dir_fd):
            for entry in files:
                with suppress(FileNotFoundError):
                    os.unlink(entry, dir_fd=fd)
            for entry in dirs:
                try:
                    os.rmdir(entry, dir_fd=fd)
                except NotADirectoryError:  # a symlink to a directory: the link goes, not its target
                    os.unlink(entry, dir_fd=fd)
                except OSError:
                    pass
    with suppress(OSError):
        os.rmdir(name, dir_fd=dir_fd)
