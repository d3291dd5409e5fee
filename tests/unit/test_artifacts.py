"""Finding the clip: response shapes, path mapping, and the trust boundary around it."""

from __future__ import annotations

import base64
from pathlib import Path, PurePosixPath

import httpx
import pytest

from opentalking_flashhead.artifacts import ClipLocator, ClipRef, find_clip
from opentalking_flashhead.confined import Place
from opentalking_flashhead.errors import ClipUnreadable
from opentalking_flashhead.settings import Settings


@pytest.mark.parametrize(
    ("body", "ref"),
    [
        ({"outputs": [{"kind": "video", "path": "/o/a.mp4", "transport": "path", "data_b64": None}]}, "/o/a.mp4"),
        ({"artifacts": [{"url": "http://svc:1/a.mp4"}]}, "http://svc:1/a.mp4"),
        ({"result": {"outputs": [{"path": "/o/b.mp4"}]}}, "/o/b.mp4"),
        ({"data": ["/o/c.mp4"]}, "/o/c.mp4"),
        ({"outputs": [{"artifact": {"output_path": "/o/d.mp4"}}]}, "/o/d.mp4"),
        ({"outputs": [{"kind": "image", "path": "/o/x.png"}, {"kind": "video", "path": "/o/e.mp4"}]}, "/o/e.mp4"),
    ],
)
def test_response_shapes(body: dict, ref: str) -> None:
    found = find_clip(body)
    assert (found.url or found.path) == ref


def test_inline_data_wins() -> None:
    assert find_clip({"outputs": [{"path": "/o/a.mp4", "data_b64": "AAAA"}]}) == ClipRef(data_b64="AAAA")


def test_no_video_is_an_error() -> None:
    with pytest.raises(ClipUnreadable, match="no video artifact"):
        find_clip({"outputs": []})


def locator(tmp_path: Path, handler=None, **overrides: object) -> ClipLocator:
    settings = Settings.load(
        overrides={"base_url": "http://svc:1", "shared_local_dir": str(tmp_path / "local"), **overrides}, environ={}
    )
    transport = httpx.MockTransport(handler or (lambda r: httpx.Response(404)))
    return ClipLocator(settings, httpx.AsyncClient(transport=transport))


def test_mapping_prefers_output_dirs_then_shared(tmp_path: Path) -> None:
    loc = locator(
        tmp_path,
        shared_remote_dir="/srv/io",
        output_remote_dir="/srv/out",
        output_local_dir=str(tmp_path / "out"),
    )
    assert loc.paths.locate("/srv/out/s/a.mp4") == Place(tmp_path / "out", PurePosixPath("s/a.mp4"))
    assert loc.paths.locate("/srv/io/s/a.mp4") == Place(tmp_path / "local", PurePosixPath("s/a.mp4"))
    assert loc.paths.locate("/elsewhere/a.mp4") is None
    assert loc.paths.locate("/srv/io/../etc/passwd") is None
    assert loc.paths.to_remote(tmp_path / "local" / "s" / "a.wav") == "/srv/io/s/a.wav"


async def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "local" / "out").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (tmp_path / "local" / "out" / "link.mp4").symlink_to(tmp_path / "secret")
    within = str(tmp_path / "local" / "out")
    with pytest.raises(ClipUnreadable, match="outside"):
        await locator(tmp_path).fetch(ClipRef(path=f"{within}/link.mp4"), tmp_path / "dl.mp4", within=within)
    assert not (tmp_path / "dl.mp4").exists()


async def test_unmapped_path_names_the_variables(tmp_path: Path) -> None:
    with pytest.raises(ClipUnreadable, match="OPENTALKING_FLASHHEAD_OUTPUT_BASE_URL"):
        await locator(tmp_path).fetch(ClipRef(path="/srv/out/a.mp4"), tmp_path / "dl.mp4", within="/srv/out")


async def test_inline_clip_is_written(tmp_path: Path) -> None:
    data = b"\x00\x00\x00\x18ftypmp42"
    ref = ClipRef(data_b64=base64.b64encode(data).decode())
    path = await locator(tmp_path).fetch(ref, tmp_path / "c.mp4", within="/srv/out")
    assert path == tmp_path / "c.mp4" and path.read_bytes() == data


async def test_download_from_output_base_url(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == "http://files:9/s/a.mp4"
        return httpx.Response(200, content=b"clip")

    loc = locator(tmp_path, handler, output_base_url="http://files:9", output_remote_dir="/srv/out")
    path = await loc.fetch(ClipRef(path="/srv/out/s/a.mp4"), tmp_path / "dl.mp4", within="/srv/out/s")
    assert path == tmp_path / "dl.mp4" and path.read_bytes() == b"clip"


async def test_foreign_origin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ClipUnreadable, match="origin"):
        await locator(tmp_path).fetch(ClipRef(url="http://evil:1/a.mp4"), tmp_path / "dl.mp4", within="/srv/out")
    assert not (tmp_path / "dl.mp4").exists()


async def test_redirect_is_not_followed(tmp_path: Path) -> None:
    loc = locator(tmp_path, lambda r: httpx.Response(302, headers={"location": "http://evil:1/a.mp4"}))
    with pytest.raises(ClipUnreadable, match="HTTP 302"):
        await loc.fetch(ClipRef(url="http://svc:1/a.mp4"), tmp_path / "dl.mp4", within="/srv/out")
    assert not (tmp_path / "dl.mp4").exists()


async def test_oversized_download_is_cut_and_removed(tmp_path: Path) -> None:
    loc = locator(tmp_path, lambda r: httpx.Response(200, content=b"x" * 2_000_000), max_clip_mb=1)
    with pytest.raises(ClipUnreadable, match=r"exceeds 1 MB.*OPENTALKING_FLASHHEAD_MAX_CLIP_MB"):
        await loc.fetch(ClipRef(url="http://svc:1/a.mp4"), tmp_path / "dl.mp4", within="/srv/out")
    assert not (tmp_path / "dl.mp4").exists()


async def test_oversized_inline_clip_is_refused_before_decoding(tmp_path: Path) -> None:
    big = base64.b64encode(b"x" * 1_100_000).decode()
    with pytest.raises(ClipUnreadable, match="exceeds 1 MB"):
        await locator(tmp_path, max_clip_mb=1).fetch(ClipRef(data_b64=big), tmp_path / "c.mp4", within="/srv/out")
    assert not (tmp_path / "c.mp4").exists()


async def test_bad_base64_is_a_decode_error(tmp_path: Path) -> None:
    from opentalking_flashhead.errors import DecodeError

    with pytest.raises(DecodeError, match="not valid base64"):
        await locator(tmp_path).fetch(ClipRef(data_b64="not base64!"), tmp_path / "c.mp4", within="/srv/out")


async def test_a_path_clip_must_lie_in_the_output_dir_the_request_named(tmp_path: Path) -> None:
    """A service answering with one of our own files (the reference, another session's input) is refused."""
    session = tmp_path / "local" / "session-1"
    (session / "out" / "000001").mkdir(parents=True)
    (session / "reference.png").write_bytes(b"png")
    within = str(session / "out" / "000001")
    with pytest.raises(ClipUnreadable, match="outside the output_dir"):
        await locator(tmp_path).fetch(ClipRef(path=str(session / "reference.png")), tmp_path / "dl.mp4", within=within)
    (session / "out" / "000001" / "a.mp4").symlink_to(session / "reference.png")
    with pytest.raises(ClipUnreadable, match="symlink on the way"):
        await locator(tmp_path).fetch(ClipRef(path=f"{within}/a.mp4"), tmp_path / "dl.mp4", within=within)
    assert (session / "reference.png").exists()


def _key_spy(tmp_path: Path, by: str, **overrides: str) -> tuple[ClipLocator, dict[str, str | None]]:
    """A locator for a service holding the key ``sekrit``, recording each download's Authorization
    header under the request URL's ``by`` ("host" or "path")."""
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[getattr(request.url, by)] = request.headers.get("authorization")
        return httpx.Response(200, content=b"clip")

    settings = Settings.load(
        overrides={"base_url": "http://svc:1", "shared_local_dir": str(tmp_path / "local"), "api_key": "sekrit"}
        | overrides,
        environ={},
    )
    headers = {"Authorization": "Bearer sekrit"}
    return ClipLocator(settings, httpx.AsyncClient(transport=httpx.MockTransport(handler), headers=headers)), seen


async def test_the_api_key_goes_to_the_service_only(tmp_path: Path) -> None:
    """Downloads from OUTPUT_BASE_URL's file server never carry the service's API key."""
    loc, seen = _key_spy(tmp_path, "host", output_base_url="http://files:9", output_remote_dir="/srv/out")
    await loc.fetch(ClipRef(path="/srv/out/s/a.mp4"), tmp_path / "a.mp4", within="/srv/out/s")
    await loc.fetch(ClipRef(url="http://svc:1/b.mp4"), tmp_path / "b.mp4", within="/srv/out/s")
    assert seen == {"files": None, "svc": "Bearer sekrit"}


async def test_a_file_server_on_the_service_s_origin_gets_no_key_either(tmp_path: Path) -> None:
    """OUTPUT_BASE_URL on the service's own origin: what lies under it is the file server's."""
    loc, seen = _key_spy(tmp_path, "path", output_base_url="http://svc:1/outputs")
    await loc.fetch(ClipRef(url="http://svc:1/outputs/a.mp4"), tmp_path / "a.mp4", within="/srv/out")
    await loc.fetch(ClipRef(url="http://svc:1/outputsx/b.mp4"), tmp_path / "b.mp4", within="/srv/out")
    assert seen == {"/outputs/a.mp4": None, "/outputsx/b.mp4": "Bearer sekrit"}
