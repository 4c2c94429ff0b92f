"""Load the frozen vectors shipped in this package, checking their checksums."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from typing import Any

FILES = (
    "canonicalization-v1.json",
    "tokens-v1.json",
    "decisions-v1.json",
    "audit-v1.json",
    "commit-v1.json",
    "receipts-v1.json",
    "delegation-v1.json",
)


class VectorIntegrityError(Exception):
    """A vector file does not match SHA256SUMS: vectors are frozen."""


def _raw(name: str) -> bytes:
    return resources.files("execauth_conformance").joinpath("vectors").joinpath(name).read_bytes()


@cache
def checksums() -> dict[str, str]:
    sums = {}
    for line in _raw("SHA256SUMS").decode("ascii").splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    return sums


@cache
def load(name: str) -> dict[str, Any]:
    """A vector file as a dict, after checking it against SHA256SUMS."""
    data = _raw(name)
    expected = checksums().get(name)
    if expected is None or hashlib.sha256(data).hexdigest() != expected:
        raise VectorIntegrityError(f"{name} does not match SHA256SUMS: vectors are frozen")
    doc: dict[str, Any] = json.loads(data)
    if doc["numberOfTests"] != len(doc["tests"]):
        raise VectorIntegrityError(f"{name}: numberOfTests says {doc['numberOfTests']}, has {len(doc['tests'])}")
    return doc


def tests(name: str, flag: str | None = None) -> list[dict[str, Any]]:
    """The test cases of a file, optionally only those carrying ``flag``."""
    return [t for t in load(name)["tests"] if flag is None or flag in t["flags"]]
