"""Every code block in the docs runs as written (issue 15 item 3).

The convention (also in docs/architecture.md, "Docs that run"):

- ```python blocks of one Markdown file run in order, in one namespace, with a fresh
  temporary directory as the working directory (top-level `await` is allowed).
- `<!-- file: NAME -->` on the line right before a block writes the block to NAME (in
  that directory) instead of running it: the yaml/json/toml files later blocks use.
- ```sh / ```bash blocks run with `bash -euo pipefail` in the same directory, with this
  environment's bin directory first on PATH (so `execauth ...` is the CLI under test).
- ```text / ```console blocks are output and are not run. A yaml/json/toml block without
  a file marker fails: add a marker or mark it text. So does a block without a language.
- `<!-- docs-test: skip REASON -->` before a block skips it (the reason is required; a
  skipped python block must still compile).
- Servers come from REDIS_URL (default redis://127.0.0.1:6379/0) and DATABASE_URL
  (default postgresql://127.0.0.1:5432/test), set for sh blocks too. A file that uses
  one skips when it is unreachable, except under CI=true, where it fails.

Which files: README.md, docs/*.md, packages/*/README.md, examples/**/README.md,
conformance/README.md; EXECAUTH_DOCS_GLOB (globs relative to the repo root, separated
by spaces) replaces that list, for an env that has a framework the docs env cannot hold.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_GLOBS = ("README.md", "docs/*.md", "packages/*/README.md", "examples/**/README.md", "conformance/README.md")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql://127.0.0.1:5432/test"

RUN_PYTHON = {"python", "py", "python3"}
RUN_SHELL = {"sh", "bash", "shell"}
NOT_RUN = {"text", "console"}
DATA = {"yaml", "yml", "json", "toml", "ini", "cfg", "jsonl"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_FILE = re.compile(r"^\s*<!--\s*file:\s*(?P<name>\S+)\s*-->\s*$")
_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\b(?P<reason>.*?)-->\s*$")
BLOCK_TIMEOUT = 180


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repo root
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    file: str | None  # <!-- file: NAME -->
    skip: str | None  # <!-- docs-test: skip REASON --> (REASON, "" when none was given)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def extract(text: str, path: str) -> list[Block]:
    """The fenced blocks of a Markdown text, with the marker on the line before each."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        lang = (opening.group("info").strip().split() or [""])[0].lower()
        marker = _previous_nonblank(lines, i)
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing
                and closing.group("fence")[0] == fence[0]
                and len(closing.group("fence")) >= len(fence)
                and not closing.group("info").strip()
            ):
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        file_match = _FILE.match(marker) if marker is not None else None
        skip_match = _SKIP.match(marker) if marker is not None else None
        blocks.append(
            Block(
                path=path,
                line=i + 1,
                lang=lang,
                code="\n".join(body) + "\n",
                file=file_match.group("name") if file_match else None,
                skip=skip_match.group("reason").strip() if skip_match else None,
            )
        )
        i = j + 1
    return blocks


def _previous_nonblank(lines: list[str], index: int) -> str | None:
    for k in range(index - 1, -1, -1):
        if lines[k].strip():
            return lines[k]
    return None


def doc_files() -> list[str]:
    globs = os.environ.get("EXECAUTH_DOCS_GLOB", "").split() or list(DEFAULT_GLOBS)
    found: set[str] = set()
    for pattern in globs:
        found.update(p.relative_to(REPO).as_posix() for p in REPO.glob(pattern) if p.is_file())
    return sorted(found)


def problems_of(blocks: list[Block]) -> list[str]:
    """Blocks that break the convention (reported before anything runs)."""
    problems = []
    for b in blocks:
        if b.skip is not None and not b.skip:
            problems.append(f"{b.where}: `docs-test: skip` needs a reason")
        if b.file is not None or b.skip is not None:
            continue
        if b.lang == "":
            problems.append(f"{b.where}: the block has no language: write ```text for output, ```sh for commands")
        elif b.lang in DATA:
            problems.append(
                f"{b.where}: a ```{b.lang} block without a file marker: put `<!-- file: NAME -->` on the "
                "line before it (if a later block uses it) or mark it ```text"
            )
        elif b.lang not in RUN_PYTHON | RUN_SHELL | NOT_RUN:
            problems.append(f"{b.where}: unknown block language {b.lang!r}: use python, sh, text or a file marker")
    return problems


def _services_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("check_services", REPO / ".ci" / "check_services.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _require_servers(blocks: list[Block]) -> None:
    """Skip (or fail under CI=true) when a server the file's blocks name is unreachable."""
    text = "".join(b.code for b in blocks if b.skip is None)
    services = _services_module()
    checks = []
    if "REDIS_URL" in text:
        url = urlsplit(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
        checks.append(services.redis_answers(url.hostname or "127.0.0.1", url.port or 6379))
    if "DATABASE_URL" in text:
        url = urlsplit(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
        checks.append(services.postgres_answers(url.hostname or "127.0.0.1", url.port or 5432))
    down = [c for c in checks if c is not None]
    if down:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"CI=true and a server these docs need is down: {'; '.join(down)}")
        pytest.skip(f"a server these docs need is down: {'; '.join(down)}")


def _compile(block: Block) -> CodeType:
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    return compile(block.code, block.where, "exec", flags=flags, dont_inherit=True)


def run_python(block: Block, namespace: dict[str, object]) -> None:
    code = _compile(block)
    if code.co_flags & 0x80:  # CO_COROUTINE: the block awaits at top level
        result = eval(code, namespace)
        asyncio.run(result)
    else:
        exec(code, namespace)


def run_shell(block: Block, cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{block.where}: the ```{block.lang} block exited {proc.returncode}\n"
            f"--- block\n{block.code}--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}",
            pytrace=False,
        )


def shell_env() -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    env.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    env.pop("VIRTUAL_ENV", None)
    return env


def test_the_doc_files_are_found() -> None:
    files = doc_files()
    if not os.environ.get("EXECAUTH_DOCS_GLOB"):
        assert {"README.md", "docs/architecture.md", "packages/core/README.md"} <= set(files)
    assert files, "EXECAUTH_DOCS_GLOB matched no file"


@pytest.mark.parametrize("doc", doc_files())
def test_code_blocks_run(doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = extract((REPO / doc).read_text(encoding="utf-8"), doc)
    problems = problems_of(blocks)
    for b in blocks:  # a skipped python block is not run, but it must still be Python
        if b.skip is not None and b.file is None and b.lang in RUN_PYTHON:
            try:
                _compile(b)
            except SyntaxError as exc:
                problems.append(f"{b.where}: the skipped python block does not compile: {exc}")
    assert not problems, "\n".join(problems)
    runnable = [b for b in blocks if b.skip is None and (b.file is not None or b.lang in RUN_PYTHON | RUN_SHELL)]
    skipped = [f"line {b.line}: {b.skip}" for b in blocks if b.skip]
    if skipped:
        print(f"{doc}: blocks skipped by their marker:", *skipped, sep="\n  ")
    if not runnable:
        pytest.skip(f"{doc}: no block to run; " + "; ".join(skipped) if skipped else f"{doc}: no block to run")
    _require_servers(runnable)
    for var, default in (("REDIS_URL", DEFAULT_REDIS_URL), ("DATABASE_URL", DEFAULT_DATABASE_URL)):
        monkeypatch.setenv(var, os.environ.get(var) or default)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    env = shell_env()
    for block in runnable:
        if block.file is not None:
            target = tmp_path / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, encoding="utf-8")
        elif block.lang in RUN_PYTHON:
            try:
                run_python(block, namespace)
            except Exception as exc:
                pytest.fail(f"{block.where}: the python block raised {type(exc).__name__}: {exc}", pytrace=True)
        else:
            run_shell(block, tmp_path, env)


# --- the extractor itself -------------------------------------------------------------

SAMPLE = """\
# t

<!-- file: policy.yaml -->
```yaml
a: 1
```

```python
x = 1
```

<!-- docs-test: skip needs a model -->
```sh
exit 1
```

```text
not run
```

```json
{"no": "marker"}
```

````markdown
```python
inner
```
````
"""


def test_extract_reads_markers_languages_and_nested_fences() -> None:
    blocks = extract(SAMPLE, "sample.md")
    assert [(b.lang, b.file, b.skip) for b in blocks] == [
        ("yaml", "policy.yaml", None),
        ("python", None, None),
        ("sh", None, "needs a model"),
        ("text", None, None),
        ("json", None, None),
        ("markdown", None, None),
    ]
    assert blocks[0].code == "a: 1\n"
    assert blocks[5].code == "```python\ninner\n```\n"


def test_convention_problems_are_reported() -> None:
    blocks = extract(SAMPLE + "\n```\nno language\n```\n\n<!-- docs-test: skip -->\n```sh\ntrue\n```\n", "s.md")
    problems = problems_of(blocks)
    assert any("s.md:25" in p and "file marker" in p for p in problems), problems
    assert any("unknown block language 'markdown'" in p for p in problems), problems
    assert any("no language" in p for p in problems), problems
    assert any("needs a reason" in p for p in problems), problems
    assert len(problems) == 4


def test_python_blocks_share_a_namespace_and_may_await(tmp_path: Path) -> None:
    ns: dict[str, object] = {}
    run_python(Block("m.md", 1, "python", "import asyncio\nx = 2\n", None, None), ns)
    run_python(Block("m.md", 5, "python", "await asyncio.sleep(0)\ny = x * 21\n", None, None), ns)
    assert ns["y"] == 42


def test_a_failing_shell_block_fails_the_test(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"m\.md:3"):
        run_shell(Block("m.md", 3, "sh", "false\necho never\n", None, None), tmp_path, shell_env())
    run_shell(Block("m.md", 9, "sh", "command -v execauth\n", None, None), tmp_path, shell_env())
