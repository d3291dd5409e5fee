"""confined.py: reads and removals below a trusted root never follow a symlink below it."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from opentalking_flashhead import confined, storage
from opentalking_flashhead.confined import Place


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A root with ``session/out/000001/clip.mp4``, and a victim directory outside it."""
    root, victim = tmp_path / "root", tmp_path / "victim"
    (root / "session" / "out" / "000001").mkdir(parents=True)
    (root / "session" / "out" / "000001" / "clip.mp4").write_bytes(b"clip")
    victim.mkdir()
    (victim / "000001").mkdir()
    (victim / "000001" / "clip.mp4").write_bytes(b"victim")
    return root, victim


def test_the_root_itself_may_be_a_symlink(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = tree
    (tmp_path / "alias").symlink_to(root)
    assert confined.read_file(Place(tmp_path / "alias", PurePosixPath("session/out/000001/clip.mp4")), 10) == b"clip"


def test_reads_go_through_no_symlink_below_the_root(tree: tuple[Path, Path]) -> None:
    root, victim = tree
    out = root / "session" / "out"
    (root / "session" / "moved").mkdir()
    out.replace(root / "session" / "moved" / "out")
    out.symlink_to(victim)
    with pytest.raises(NotADirectoryError):  # O_DIRECTORY | O_NOFOLLOW on a symlink
        confined.read_file(Place(root, PurePosixPath("session/out/000001/clip.mp4")), 10)
    (root / "session" / "link.mp4").symlink_to(victim / "000001" / "clip.mp4")
    with pytest.raises(OSError, match="symbolic links"):
        confined.read_file(Place(root, PurePosixPath("session/link.mp4")), 10)


def test_a_fifo_is_refused_without_blocking(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    os.mkfifo(root / "session" / "clip.mp4")
    with pytest.raises(OSError, match="not a regular file"):
        confined.read_file(Place(root, PurePosixPath("session/clip.mp4")), 10)


def test_read_stops_one_byte_past_the_limit(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    assert confined.read_file(Place(root, PurePosixPath("session/out/000001/clip.mp4")), 2) == b"cli"


def test_removing_a_symlink_removes_the_link_only(tree: tuple[Path, Path]) -> None:
    root, victim = tree
    (root / "session" / "out" / "000002").symlink_to(victim / "000001")
    assert confined.remove(Place(root, PurePosixPath("session/out/000002")))
    assert not (root / "session" / "out" / "000002").is_symlink()
    assert (victim / "000001" / "clip.mp4").read_bytes() == b"victim"


def test_emptying_a_directory_swapped_for_a_symlink_removes_the_link(tree: tuple[Path, Path]) -> None:
    root, victim = tree
    out = root / "session" / "out"
    out.replace(root / "session" / "elsewhere")
    out.symlink_to(victim)
    confined.remove_children(Place(root, PurePosixPath("session/out")))
    assert not out.is_symlink() and not out.exists()
    assert (victim / "000001" / "clip.mp4").read_bytes() == b"victim"


def test_emptying_keeps_the_named_entries(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    (root / "session" / "out" / "000002").mkdir()
    confined.remove_children(Place(root, PurePosixPath("session/out")), keep={"000002"})
    assert [p.name for p in (root / "session" / "out").iterdir()] == ["000002"]


def test_a_place_cannot_climb_out_of_its_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a path below"):
        Place(tmp_path, PurePosixPath("a/../../etc"))


def test_a_held_session_lock_is_seen_in_the_same_process_too(tmp_path: Path) -> None:
    session = tmp_path / "session-1"
    session.mkdir()
    lock = storage.lock_session(Place(tmp_path) / "session-1")
    assert storage.in_use(Place(tmp_path) / "session-1")
    os.close(lock)
    assert not storage.in_use(Place(tmp_path) / "session-1")
    assert not storage.in_use(Place(tmp_path) / "session-gone")
