"""Reference scores as data: ``reference_scores.json`` ships in the package (built by ``python -m tailmix.suite
report`` from the protocol's run records), and :func:`normalized_score` reads it (D4RL's ``get_normalized_score``).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

PATH = Path(__file__).resolve().parent / "reference_scores.json"


@lru_cache(maxsize=1)
def _load(path: str = str(PATH)) -> dict:
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else {"tasks": {}}


def reference_scores(task: str | None = None) -> dict:
    """The whole reference file, or one task's entry (by name or id)."""
    data = _load()
    if task is None:
        return data
    # a name ("KnownAnswer") or an id of either view ("tailmix/KnownAnswer-v0", "tailmix/KnownAnswerCentral-v0");
    # read from the ids in the file, so this bottom module of the suite needs no task registry
    for tid, entry in data["tasks"].items():
        if task in (tid, entry.get("central_id")) or tid.startswith(f"tailmix/{task}-v"):
            return entry
    raise ValueError(f"{task} has no reference rows yet (python -m tailmix.suite run ... then report)")


def normalized_score(task: str, score: float) -> float:
    """``100 * (score - best fixed) / (ceiling - best fixed)``: 0 is the protocol's best fixed policy, 100 the
    ceiling (test balanced accuracy). Raises ``ValueError`` when the task has no best fixed or ceiling row yet,
    or when the ceiling does not exceed best fixed (no headroom to normalise by)."""
    entry = reference_scores(task)
    rows = entry["rows"]
    if "best_fixed" not in rows or "ceiling" not in rows:
        raise ValueError(f"{entry['id']} lacks a best fixed or ceiling reference row; it cannot be normalised yet")
    lo, hi = rows["best_fixed"]["score"], rows["ceiling"]["score"]
    if hi <= lo:
        raise ValueError(f"{entry['id']}: the ceiling ({hi:.4f}) does not exceed best fixed ({lo:.4f}): no headroom")
    return 100.0 * (float(score) - lo) / (hi - lo)
