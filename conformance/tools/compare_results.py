"""Compare every adapter's conformance results with the vectors and with each other.

    python conformance/tools/compare_results.py [RESULTS_DIR]   # default: $EXECAUTH_RESULTS_DIR or ./results

Exit 0 when every results file agrees with the frozen vectors and all files are
identical (same vectors, same decision and audit digests, same executed flags);
exit 1 otherwise, printing the first difference. No results files is a failure.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parents[1] / "src" / "execauth_conformance" / "vectors" / "decisions-v1.json"


def main(argv: list[str]) -> int:
    folder = Path(argv[1] if len(argv) > 1 else os.environ.get("EXECAUTH_RESULTS_DIR", "results"))
    files = sorted(folder.glob("*.json"))
    if not files:
        print(f"compare: no results files in {folder}/ - did any conformance suite run?")
        return 1
    expected = {
        f"decisions/{t['tcId']}": t for t in json.loads(VECTORS.read_text())["tests"] if "adapter" in t["flags"]
    }
    runs: dict[str, dict[str, Any]] = {}
    for path in files:
        doc = json.loads(path.read_text())
        runs[doc["harness"]] = doc["results"]
    for name, res in runs.items():
        missing = sorted(set(expected) - set(res), key=lambda k: int(k.split("/")[1]))
        if missing:
            print(f"compare: {name} did not run vector {missing[0]} ({len(missing)} missing)")
            return 1
        for vid in sorted(expected, key=lambda k: int(k.split("/")[1])):
            want, got = expected[vid]["expected"], res[vid]
            if got["record_digest"] != want["record_digest"] or got["executed"] != (want["outcome"] == "ALLOW"):
                print(
                    f"compare: {name} differs from the vectors at {vid} ({expected[vid]['comment']}): "
                    f"got executed={got['executed']} record={got['record_digest']}, "
                    f"want executed={want['outcome'] == 'ALLOW'} record={want['record_digest']}"
                )
                return 1
    names = sorted(runs, key=lambda n: (n != "reference", n))
    base = names[0]
    for name in names[1:]:
        for vid in sorted(set(runs[base]) | set(runs[name])):
            if runs[base].get(vid) != runs[name].get(vid):
                print(f"compare: {name} differs from {base} at {vid}: {runs[name].get(vid)} != {runs[base].get(vid)}")
                return 1
    print(f"compare: {len(names)} harness(es) agree on {len(expected)} vectors: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
