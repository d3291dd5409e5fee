"""What a user installs: the wheel and sdist carry the license, the metadata says what is true."""

from __future__ import annotations

import os
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The wheel and the sdist, built from this checkout by the project's own build backend."""
    from hatchling.build import build_sdist, build_wheel

    out = tmp_path_factory.mktemp("dist")
    here = os.getcwd()
    os.chdir(ROOT)  # the backend builds the project in the current directory, as pip runs it
    try:
        wheel, sdist = build_wheel(str(out)), build_sdist(str(out))
    finally:
        os.chdir(here)
    return out / wheel, out / sdist


def test_license_is_in_the_wheel_and_the_sdist(built: tuple[Path, Path]) -> None:
    wheel, sdist = built
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.lstrip().startswith("Apache License") and "END OF TERMS AND CONDITIONS" in license_text
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert archive.read(f"{info}/licenses/LICENSE").decode() == license_text
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        member = archive.extractfile(f"{top}/LICENSE")
        assert member is not None and member.read().decode() == license_text
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]


def test_metadata_names_the_python_versions_and_the_projects_it_works_with(built: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(built[0]) as archive:
        info = next(n.split("/")[0] for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
    classifiers: list[str] = metadata.get_all("Classifier", [])
    versions = [c.rsplit(" :: ", 1)[1] for c in classifiers if c.count("::") == 2 and "3." in c]
    assert versions == ["3.10", "3.11", "3.12", "3.13"]
    assert metadata["Requires-Python"] == ">=3.10"
    entries: list[str] = metadata.get_all("Project-URL", [])
    urls = {label: url for label, url in (entry.split(", ", 1) for entry in entries)}
    assert set(urls) == {"OpenTalking", "OmniRT", "SoulX-FlashHead"}
    assert all(url.startswith("https://github.com/") for url in urls.values())
