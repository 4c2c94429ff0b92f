"""Render the tables in docs/court.md from the code, so the docs cannot drift.

python -m execauth_core._docs   # prints both tables
"""

from __future__ import annotations

from .effects import EFFECTS
from .reasons import ReasonCode


def effects_table() -> str:
    rows = [
        "| effect | tier | reversibility | blast radius | preflight | min. evidence | what it is |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in EFFECTS.values():
        rows.append(
            f"| `{s.name}` | {s.tier.value} | {s.reversibility.value} | {s.blast_radius.value} | "
            f"{'required' if s.preflight_required else '-'} | {s.min_evidence.value} | {s.description} |"
        )
    return "\n".join(rows)


def reasons_table() -> str:
    import inspect

    from . import reasons

    source = inspect.getsource(reasons)
    rows = ["| code | meaning |", "|---|---|"]
    for code in ReasonCode:
        marker = f'{code.name} = "{code.value}"\n'
        doc = source.split(marker, 1)[1].split('"""')[1].strip() if marker in source else ""
        rows.append(f"| `{code.value}` | {doc} |")
    return "\n".join(rows)


def refresh(text: str) -> str:
    """Replace the generated blocks of a markdown page with the current tables."""
    for name, table in (("effects table", effects_table()), ("reason codes", reasons_table())):
        start = text.index(f"<!-- generated: {name}")
        body = text.index("\n", start) + 1
        end = text.index("<!-- end generated -->", body)
        text = text[:body] + table + "\n" + text[end:]
    return text


if __name__ == "__main__":  # pragma: no cover
    import sys
    from pathlib import Path

    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        page = Path(sys.argv[2])
        page.write_text(refresh(page.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(effects_table())
        print()
        print(reasons_table())
