"""Where the service put the clip, turned into a file this process may read.

OmniRT never moves bytes: it answers with a path on *its* filesystem. Deployments bridge that
with a shared mount (seen under different prefixes on each side), inline base64, or a file
server in front of the output dir. The service is not trusted here: a path must lie inside the
chunk's output dir and is read without following any symlink below our configured roots, and a URL
must point at an origin we were told about.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from opentalking_flashhead import confined, http_bounds
from opentalking_flashhead.confined import Place
from opentalking_flashhead.errors import ClipUnreadable, DecodeError
from opentalking_flashhead.settings import Settings, env_name

_REF_KEYS = ("path", "url", "uri", "file", "filename", "output_path", "video")
_CONTAINERS = ("outputs", "artifacts", "result", "data")
_FIX = (
    f"map the service's output dir with {env_name('output_remote_dir')} and {env_name('output_local_dir')}, "
    f"or serve it over HTTP and set {env_name('output_base_url')}"
)


@dataclass(frozen=True)
class ClipRef:
    """One video artifact as the service described it: a path, a URL, or inline bytes."""

    path: str | None = None
    url: str | None = None
    data_b64: str | None = None


def find_clip(body: Any) -> ClipRef:
    """The first video artifact in a response, tolerating the shapes OpenTalking's docs mention."""
    for item in _candidates(body):
        ref = _ref_from(item)
        if ref is not None:
            return ref
    raise ClipUnreadable(f"the service's answer holds no video artifact: {str(body)[:300]}")


def _candidates(body: Any) -> Iterator[Any]:
    if not isinstance(body, Mapping):
        yield body
        return
    for key in _CONTAINERS:
        value = body.get(key)
        if isinstance(value, list):
            yield from value
        elif isinstance(value, Mapping) and any(k in value for k in _CONTAINERS):
            yield from _candidates(value)
        elif value is not None:
            yield value


def _ref_from(item: Any) -> ClipRef | None:
    if isinstance(item, str) and item.strip():
        return _ref_from_string(item.strip())
    if not isinstance(item, Mapping):
        return None
    if item.get("kind") not in (None, "video"):
        return None
    if isinstance(item.get("data_b64"), str) and item["data_b64"]:
        return ClipRef(data_b64=item["data_b64"])
    for key in _REF_KEYS:
        value = item.get(key)
        if isinstance(value, str) and value.strip():
            return _ref_from_string(value.strip())
    nested = item.get("artifact")
    return _ref_from(nested) if isinstance(nested, Mapping) else None


def _ref_from_string(text: str) -> ClipRef:
    return ClipRef(url=text) if text.startswith(("http://", "https://")) else ClipRef(path=text)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def _under(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` (POSIX text, as the service writes it), or None."""
    pure, base = PurePosixPath(path), PurePosixPath(root)
    if ".." in pure.parts:
        return None
    try:
        return str(pure.relative_to(base))
    except ValueError:
        return None


class PathMap:
    """Paths between this process and the service: output dirs first, then shared storage."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        pairs: list[tuple[str, Path]] = []
        if settings.output_remote_dir and settings.output_local_dir:
            pairs.append((settings.output_remote_dir, settings.output_local_dir))
        pairs.append((settings.shared_remote_dir, settings.shared_local_dir))
        self.mappings = pairs

    def to_remote(self, local: Path) -> str:
        """The path under which the service sees one of our files in shared storage."""
        rel = local.relative_to(self.settings.shared_local_dir)
        return str(PurePosixPath(self.settings.shared_remote_dir) / rel.as_posix())

    def locate(self, remote: str) -> Place | None:
        """Our place for a service path, or None when no configured mapping covers it. Nothing is
        resolved: below the configured root, :mod:`.confined` follows no symlink."""
        for remote_root, local_root in self.mappings:
            rel = _under(remote, remote_root)
            if rel is not None:
                return Place(local_root, PurePosixPath(rel))
        return None


class ClipLocator:
    """Fetches the clip a response names into a readable local file, trusting nothing it is told."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self.paths = PathMap(settings)
        self.max_bytes = int(settings.max_clip_mb * 1024 * 1024)
        self.service_origin = _origin(settings.base_url)
        self.origins = {self.service_origin}
        if settings.output_base_url:
            self.origins.add(_origin(settings.output_base_url))

    async def fetch(self, ref: ClipRef, dest: Path, within: str) -> Path:
        """``dest``, holding the clip ``ref`` names: copied from where the mapping finds it,
        downloaded, or decoded from inline data. ``dest`` should lie outside shared storage.

        ``within`` is the output dir the request named (as the service sees it): a clip by path
        must lie inside it and is copied to ``dest`` through descriptors that follow no symlink, so
        a service cannot make us read (or, cleaning up, delete) any other file.
        """
        if ref.data_b64 is not None:
            if len(ref.data_b64) * 3 // 4 > self.max_bytes:
                raise ClipUnreadable(self._too_big(len(ref.data_b64) * 3 // 4))
            try:
                dest.write_bytes(base64.b64decode(ref.data_b64, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise DecodeError(f"the service's inline clip is not valid base64: {exc}") from exc
            return dest
        if ref.url is not None:
            return await self._download(ref.url, dest)
        assert ref.path is not None
        if _under(ref.path, within) is None:
            raise ClipUnreadable(
                f"the service named the clip {ref.path!r}, outside the output_dir {within!r} the request asked "
                "for; refusing to read it"
            )
        place = self.paths.locate(ref.path)
        data = self._read(place, ref.path) if place is not None else None
        if data is not None:
            dest.write_bytes(data)
            return dest
        if self.settings.output_base_url:
            return await self._download(self._url_for(ref.path), dest)
        where = f" (looked at {place})" if place else ""
        raise ClipUnreadable(f"the clip {ref.path!r} is not readable from this machine{where}; {_FIX}")

    def _read(self, place: Place, remote: str) -> bytes | None:
        """The clip's bytes, or None when it is not there; never through a symlink below the root,
        so nothing outside the chunk's own output dir is read, whatever the service swaps meanwhile."""
        try:
            data = confined.read_file(place, self.max_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ClipUnreadable(
                f"the clip {remote!r} is not a plain file inside the output dir the request named ({exc.strerror}: "
                "a symlink on the way, or no regular file); refusing to read anything outside it"
            ) from exc
        if len(data) > self.max_bytes:
            raise ClipUnreadable(self._too_big(len(data), remote))
        return data

    def _url_for(self, remote: str) -> str:
        base = self.settings.output_base_url
        assert base is not None
        for root in (self.settings.output_remote_dir, self.settings.shared_remote_dir):
            rel = _under(remote, root) if root else None
            if rel is not None:
                return f"{base}/{quote(rel)}"
        return f"{base}/{quote(PurePosixPath(remote).name)}"

    async def _download(self, url: str, dest: Path) -> Path:
        if _origin(url) not in self.origins:
            raise ClipUnreadable(
                f"refusing to download the clip from {url}: its origin is neither the service's nor "
                f"{env_name('output_base_url')}'s"
            )
        request = self.http.build_request("GET", url)
        if not self._keyed(url):
            request.headers.pop("Authorization", None)
        size = 0
        try:
            async with http_bounds.by():  # a stalled or dripping download ends with the chunk's deadline
                response = await self.http.send(request, stream=True, follow_redirects=False)
                async with contextlib.aclosing(response):
                    if response.status_code != 200:
                        raise ClipUnreadable(
                            f"downloading the clip from {url} answered HTTP {response.status_code}",
                            retryable=response.status_code >= 500,
                        )
                    with dest.open("wb") as out:
                        async for block in response.aiter_bytes():
                            size += len(block)
                            if size > self.max_bytes:
                                raise ClipUnreadable(self._too_big(size, url))
                            out.write(block)
        except TimeoutError as exc:
            dest.unlink(missing_ok=True)
            raise ClipUnreadable(
                f"downloading the clip from {url} did not finish by the chunk's deadline ({size} bytes read); "
                f"raise {env_name('chunk_deadline_sec')} if the file server is that slow",
                retryable=True,
            ) from exc
        except httpx.HTTPError as exc:
            dest.unlink(missing_ok=True)
            raise ClipUnreadable(f"downloading the clip from {url} failed: {exc}", retryable=True) from exc
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest

    def _keyed(self, url: str) -> bool:
        """Whether a download may carry the API key: the key is the service's, and a file server
        (anything under ``OUTPUT_BASE_URL``, on the service's origin or not) never sees it."""
        base = self.settings.output_base_url
        if base and (url == base or url.startswith(base.rstrip("/") + "/")):
            return False
        return _origin(url) == self.service_origin

    def _too_big(self, size: int, url: str = "inline data") -> str:
        return (
            f"the clip from {url} exceeds {self.settings.max_clip_mb:g} MB (read {size} bytes); "
            f"raise {env_name('max_clip_mb')} if such clips are expected"
        )
