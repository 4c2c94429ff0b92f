"""docs/court.md carries generated tables: they must match the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from execauth_core._docs import effects_table, reasons_table
from execauth_core.effects import EFFECTS

DOC = Path(__file__).resolve().parents[3] / "docs" / "court.md"


@pytest.fixture(scope="module")
def doc() -> str:
    if not DOC.is_file():
        pytest.fail(f"{DOC} is missing")
    return DOC.read_text(encoding="utf-8")


def test_effects_table_matches_the_code(doc: str) -> None:
    assert effects_table() in doc
    assert len(EFFECTS) == 23


def test_reason_code_table_matches_the_registry(doc: str) -> None:
    assert reasons_table() in doc
