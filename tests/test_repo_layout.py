"""Repository-level promises: a LICENSE in every distribution, no link out of the repo."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE_FOLDERS = sorted(
    p.parent for p in [*REPO.glob("packages/*/pyproject.toml"), REPO / "conformance" / "pyproject.toml"]
)


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = [REPO / name for name in out.decode().split("\0") if name]
    return [f for f in files if f.is_file() and f.suffix in {".md", ".py", ".ini", ".toml", ".txt", ".cfg", ""}]


def test_nothing_links_outside_the_repository() -> None:
    outside = "../" + "shared"  # split so this file does not match itself
    hits = [
        f"{f.relative_to(REPO)}:{n}"
        for f in _tracked_text_files()
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if outside in line or "/work/" + "shared" in line
    ]
    assert hits == []
    assert (REPO / "docs" / "architecture.md").is_file()


def test_every_distribution_folder_has_the_license() -> None:
    root = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in root and "Version 2.0, January 2004" in root
    assert "END OF TERMS AND CONDITIONS" in root
    assert len(PACKAGE_FOLDERS) >= 7
    for folder in PACKAGE_FOLDERS:
        assert (folder / "LICENSE").read_text(encoding="utf-8") == root, folder
        pyproject = (folder / "pyproject.toml").read_text(encoding="utf-8")
        assert 'license-files = ["LICENSE"]' in pyproject, folder


def test_wheel_and_sdist_carry_the_license(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(tmp_path), str(REPO / "packages/core")],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    (sdist,) = tmp_path.glob("*.tar.gz")
    license_text = (REPO / "LICENSE").read_bytes()
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert zf.read(name) == license_text
        assert "License-File: LICENSE" in zf.read(name.replace("licenses/LICENSE", "METADATA")).decode()
    with tarfile.open(sdist) as tf:
        (member,) = [m for m in tf.getmembers() if m.name.count("/") == 1 and m.name.endswith("/LICENSE")]
        extracted = tf.extractfile(member)
        assert extracted is not None and extracted.read() == license_text
