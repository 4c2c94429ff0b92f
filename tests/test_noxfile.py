"""The README's test command and .ci/run run the same environments (issue 15 item 2).

On a pyenv machine `python3.10` on PATH is a shim that fails unless 3.10 is active;
noxfile.find_python310 must then find the installed 3.10 through `pyenv`, as .ci/run
used to do on its own. The pyenv here is a stand-in script: what is tested is our
discovery, given what pyenv answers.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import stat
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def _noxfile() -> ModuleType:
    pytest.importorskip("nox", reason="the docs env installs nox")
    spec = importlib.util.spec_from_file_location("noxfile_under_test", REPO / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _pyenv_machine(tmp_path: Path, *, installed: list[str]) -> dict[str, str]:
    bin_dir = tmp_path / "shims"
    # An inactive pyenv shim: on PATH, but it fails.
    _script(bin_dir / "python3.10", "echo 'pyenv: python3.10: command not found' >&2\nexit 127\n")
    root = tmp_path / "pyenv-root"
    _script(
        bin_dir / "pyenv",
        f'case "$1" in versions) printf "%s\\n" {" ".join(installed)} ;; root) echo {root} ;; esac\n',
    )
    for version in installed:
        major_minor = ".".join(version.split(".")[:2])
        _script(root / "versions" / version / "bin" / f"python{major_minor}", f"echo {major_minor}\n")
    return {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"}


def test_an_inactive_pyenv_shim_is_not_taken_and_pyenv_is_asked(tmp_path: Path) -> None:
    nf = _noxfile()
    env = _pyenv_machine(tmp_path, installed=["3.9.18", "3.10.2", "3.10.13", "3.11.7"])
    assert nf.find_python310(env) == str(tmp_path / "pyenv-root/versions/3.10.13/bin/python3.10")


def test_no_python310_anywhere_is_none_and_an_explicit_one_wins(tmp_path: Path) -> None:
    nf = _noxfile()
    env = _pyenv_machine(tmp_path, installed=["3.11.7"])
    assert nf.find_python310(env) is None
    assert nf.find_python310({**env, "EXECAUTH_PY310": "/opt/py310/bin/python3.10"}) == "/opt/py310/bin/python3.10"


def test_a_working_python310_on_path_is_used(tmp_path: Path) -> None:
    nf = _noxfile()
    _script(tmp_path / "bin" / "python3.10", "echo 3.10\n")
    assert nf.find_python310({"PATH": str(tmp_path / "bin")}) == str(tmp_path / "bin" / "python3.10")


def test_a_skipped_env_is_loud() -> None:
    nf = _noxfile()
    local = nf.skipped_banner("core-py310", "no Python 3.10 found", ci=False)
    assert "core-py310 is SKIPPED" in local and "WITHOUT it" in local and local.count("\n") >= 3
    assert "FAILS" in nf.skipped_banner("core-py310", "no Python 3.10 found", ci=True)


def test_ci_run_is_the_readme_command_and_has_no_discovery_of_its_own() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci_run = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    (command,) = re.findall(r"^python3 -m venv .*nox -s tests$", readme, flags=re.MULTILINE)
    assert command in ci_run.splitlines()
    assert "pyenv" not in "\n".join(line for line in ci_run.splitlines() if not line.startswith("#"))
    assert "EXECAUTH_PY310" not in ci_run


def test_tox_env_list_has_docs_and_every_env_reinstalls_our_packages() -> None:
    tox = (REPO / "tox.ini").read_text(encoding="utf-8")
    env_list = re.search(r"^env_list = (.*)$", tox, flags=re.MULTILINE)
    assert env_list is not None and "docs" in [e.strip() for e in env_list.group(1).split(",")]
    assert "commands_pre =\n    python {tox_root}/.ci/fresh_install.py" in tox
    overriding = [
        s.split("]", 1)[0]
        for s in re.split(r"^\[", tox, flags=re.MULTILINE)
        if s.startswith("testenv:") and "\ncommands_pre" in s
    ]
    assert overriding == [], "these envs replace the reinstall step"
