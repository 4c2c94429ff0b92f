#!/usr/bin/env python3
"""Make a test environment test the working tree, and prove that it does.

tox reuses an environment between runs and installs its dependencies only when the
list of them changes, so after a code change it would go on testing the wheels it
built the first time. Every tox env therefore runs this script before its tests
(`commands_pre`):

1. each execauth distribution installed in the running interpreter's environment is
   compared with its folder in this checkout: every installed file of its import
   package, byte for byte, with the working tree (and every working-tree file must be
   installed), and its pyproject.toml with the one it was installed from;
2. those that differ are rebuilt and reinstalled from the checkout (`pip install
   --force-reinstall --no-deps`: third-party packages are left alone), so an unchanged
   tree costs a fraction of a second and a change costs one wheel build per package;
3. the comparison runs again; a difference left exits 1 and names the files.

`--force` reinstalls every one of them; `--check-only` skips step 2. Standard library
only (it also runs on Python 3.10).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata as md
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_NAME = re.compile(r'^name\s*=\s*"([^"]+)"', re.MULTILINE)


def own_distributions(repo: Path = REPO) -> dict[str, Path]:
    """Distribution name (normalized) -> its folder, for every package in the checkout."""
    found: dict[str, Path] = {}
    for pyproject in [*sorted(repo.glob("packages/*/pyproject.toml")), repo / "conformance" / "pyproject.toml"]:
        if not pyproject.is_file():
            continue
        match = _NAME.search(pyproject.read_text(encoding="utf-8"))
        if match:
            found[_normalize(match.group(1))] = pyproject.parent
    return found


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(own: dict[str, Path], search_path: list[str] | None = None) -> dict[str, md.Distribution]:
    """The distributions of `own` that are installed (in sys.path, or in search_path)."""
    importlib.invalidate_caches()
    dists = md.distributions() if search_path is None else md.distributions(path=search_path)
    return {_normalize(d.metadata["Name"]): d for d in dists if _normalize(d.metadata["Name"]) in own}


def differences(dist: md.Distribution, folder: Path) -> list[str]:
    """Where the installed files of `dist` differ from the working tree under folder/src."""
    src = folder / "src"
    packages = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.endswith(".egg-info"))
    problems: list[str] = []
    seen: set[str] = set()
    for file in dist.files or ():
        rel = file.as_posix()
        top = rel.split("/", 1)[0]
        if top not in packages or "__pycache__" in rel:
            continue
        seen.add(rel)
        tree = src / rel
        if not tree.is_file():
            problems.append(f"{rel}: installed, but not in the working tree")
        elif Path(str(file.locate())).read_bytes() != tree.read_bytes():
            problems.append(f"{rel}: installed copy differs from the working tree")
    for package in packages:
        for path in _tree_files(src / package):
            rel = path.relative_to(src).as_posix()
            if rel not in seen:
                problems.append(f"{rel}: in the working tree, but not installed")
    return problems


def _tree_files(root: Path) -> Iterable[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            yield path


def _stamp_file() -> Path:
    return Path(sys.prefix) / "execauth-fresh-install.json"


def _pyproject_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "pyproject.toml").read_bytes()).hexdigest()


def _stamps() -> dict[str, str]:
    try:
        data = json.loads(_stamp_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def reinstall(folders: list[Path]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps"]
    subprocess.run([*cmd, *map(str, folders)], check=True)  # noqa: S603 (our own folders)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-only", action="store_true", help="compare only, do not reinstall")
    parser.add_argument("--force", action="store_true", help="reinstall every execauth distribution found")
    args = parser.parse_args(argv)
    own = own_distributions()
    present = installed(own)
    if not present:
        print("fresh_install: no execauth distribution is installed here: nothing to do")
        return 0
    if not args.check_only:
        stamps = _stamps()
        stale = sorted(
            name
            for name, dist in present.items()
            if args.force or stamps.get(name) != _pyproject_digest(own[name]) or differences(dist, own[name])
        )
        if stale:
            print(f"fresh_install: reinstalling {', '.join(stale)} from the working tree")
            reinstall([own[name] for name in stale])
            present = installed(own)
        stamps.update({name: _pyproject_digest(own[name]) for name in stale})
        with _stamp_file().open("w", encoding="utf-8") as fh:
            json.dump(stamps, fh, indent=1, sort_keys=True)
    bad = {name: differences(dist, own[name]) for name, dist in sorted(present.items())}
    bad = {name: problems for name, problems in bad.items() if problems}
    if bad:
        for name, problems in bad.items():
            for problem in problems:
                print(f"fresh_install: {name}: {problem}", file=sys.stderr)
        print("fresh_install: this environment does not test the working tree", file=sys.stderr)
        return 1
    print(f"fresh_install: {', '.join(sorted(present))} installed from the working tree (files checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
