"""Compare the JSON results of two `same_behaviour.sh` runs (before and after a refactor).

    python benchmarks/same_behaviour.py OLD_DIR NEW_DIR

Every train.json, result.json, validation.json and comparison.json must be equal, value for value
(floats bit for bit) and key for key in the same order, except what measures the machine rather
than the method: wall-clock timings, speedups in wall-clock, memory, the machine and the package
versions. The two runs must come from different source commits (else the check compares a tree
with itself). Prints one line per file and every differing path; exits 1 on any difference.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

# keys whose values are measurements of the run, not of the method
IGNORED = {"timings", "peak_rss_mb", "machine", "versions", "wall_s_per_stage", "meta_training_wall_s"}


def _compiled_stages(report) -> list[str]:
    """Of a result's ``compiles`` (seconds, programs and cache hits: the machine's and the cache's
    state) only what the code decides: the stages that compiled, as a set."""
    return sorted(report.get("by_stage", {})) if isinstance(report, dict) else report


def ignored(key: str) -> bool:
    return key in IGNORED or key.endswith("_s") or key.startswith("wall")


def diff(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        order_a, order_b = [k for k in a if k in b], [k for k in b if k in a]
        if order_a != order_b:
            out.append(f"{path}: keys in another order: {order_a} != {order_b}")
        for k in sorted(set(a) | set(b)):
            if ignored(k):
                continue
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'new' if k in b else 'old'}")
            elif k == "compiles":
                out += diff(_compiled_stages(a[k]), _compiled_stages(b[k]), f"{path}/{k}/by_stage")
            else:
                out += diff(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            named = all(isinstance(x, str) for x in a + b) and len(a + b) <= 40
            return [f"{path}: {a} != {b}" if named else f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in diff(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _results(root: str) -> set[pathlib.Path]:
    skip = ("meta.json", "four_goals.json")
    return {p.relative_to(root) for p in pathlib.Path(root).rglob("*.json") if p.name not in skip}


def _commit(report: dict) -> str | None:
    versions = report.get("versions") or {}
    return versions.get("pgx_jax_commit")


def main(old: str, new: str) -> int:
    bad = 0
    files = sorted(_results(old) | _results(new))
    commits = set()
    for rel in files:
        if not (pathlib.Path(old) / rel).exists() or not (pathlib.Path(new) / rel).exists():
            print(f"{rel}: only in {'new' if (pathlib.Path(new) / rel).exists() else 'old'}")
            bad += 1
            continue
        a = json.loads((pathlib.Path(old) / rel).read_text())
        b = json.loads((pathlib.Path(new) / rel).read_text())
        commits.add((_commit(a), _commit(b)))
        d = diff(a, b)
        print(f"{rel}: {'identical' if not d else f'{len(d)} differences'}")
        for line in d[:20]:
            print("   ", line)
        bad += bool(d)
    same_code = [c for c in commits if c[0] is not None and c[0] == c[1]]
    print(f"source commits (old, new): {sorted(commits, key=str)}")
    if same_code or not files:
        print("both runs ran the same code (or there is nothing to compare): the check proves nothing")
        bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
