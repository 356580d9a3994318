"""The Q-table as a JSON document: what `sizer qtable export` writes and `sizer qtable import` reads.

Format `sizer.qtable.v2` (written):
    {"format": "sizer.qtable.v2", "reward_fn": "log_growth", "menu": [0, 0.05, ...],
     "q_table": {"<state>|<exposure>": {"q": 0.12, "weight": 40.0, "visits": 40,
                                        "reward_sum": 4.8, "reward_sq_sum": 31.0}, ...},
     "outcomes": [...], "metadata": {...}}
`<state>` is a full state (`low_vol_trending|high|light|good`) or a pooled level (`*|high|*|*`), `<exposure>`
an action of the menu; q = reward_sum / weight. The sums make a round trip exact.

The predecessors' format (read): {"q_table": {"<state>|<size_mult>|<leverage>": q, ...}}. Each action is mapped
onto the menu (backend.domain.state.legacy_action_exposure) and each non-zero value counts as one reward of
that value; values that land on one exposure are added up.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from backend.domain.state import action_key, legacy_action_exposure, parse_action_key, validate_state_key
from backend.sizing.qlearning import Cell

FORMAT = "sizer.qtable.v2"


def export_document(rows: Iterable[Any], menu: Sequence[float], reward_fn: str, outcomes: list[dict],
                    metadata: dict) -> dict:
    """`rows`: Q-table rows with state_key, action_key, weight, visits, reward_sum, reward_sq_sum."""
    return {
        "format": FORMAT,
        "reward_fn": reward_fn,
        "menu": list(menu),
        "q_table": {
            f"{r.state_key}|{r.action_key}": {"q": r.reward_sum / r.weight if r.weight > 0 else 0.0,
                                              "weight": r.weight, "visits": r.visits, "reward_sum": r.reward_sum,
                                              "reward_sq_sum": r.reward_sq_sum}
            for r in rows
        },
        "outcomes": outcomes,
        "metadata": metadata,
    }


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} {value!r} is not a finite number")
    return float(value)


def import_cells(doc: Any, menu: Sequence[float]) -> dict[tuple[str, str], Cell]:
    """The cells a document holds; ValueError naming the entry at fault."""
    if not isinstance(doc, dict) or not isinstance(doc.get("q_table"), dict):
        raise ValueError("expected an object with a 'q_table' object")
    legacy = doc.get("format") is None
    if not legacy and doc["format"] != FORMAT:
        raise ValueError(f"unknown format {doc['format']!r}; this version reads {FORMAT!r} and the predecessors' "
                         "size_mult|leverage files")
    cells: dict[tuple[str, str], Cell] = {}
    for key, value in doc["q_table"].items():
        try:
            parts = str(key).split("|")
            if legacy:
                if len(parts) != 6:
                    raise ValueError("expected regime|confidence|exposure|performance|size_mult|leverage")
                state = validate_state_key("|".join(parts[:4]))
                action = action_key(legacy_action_exposure("|".join(parts[4:]), menu))
                q = _number(value, "value")
                if q == 0:
                    continue
                old = cells.get((state, action), Cell())
                cells[(state, action)] = Cell(old.weight + 1, old.reward_sum + q, old.reward_sq_sum + q * q,
                                              old.visits + 1)
            else:
                if len(parts) != 5:
                    raise ValueError("expected <state>|<exposure>")
                state = validate_state_key("|".join(parts[:4]), pooled=True)
                action = action_key(parse_action_key(parts[4]))
                if not isinstance(value, dict):
                    raise ValueError("expected an object with weight, visits, reward_sum and reward_sq_sum")
                weight, visits = _number(value.get("weight"), "weight"), value.get("visits")
                if weight < 0 or isinstance(visits, bool) or not isinstance(visits, int) or visits < 0:
                    raise ValueError("weight and visits must be non-negative (visits a whole number)")
                cells[(state, action)] = Cell(weight, _number(value.get("reward_sum"), "reward_sum"),
                                              _number(value.get("reward_sq_sum"), "reward_sq_sum"), visits)
        except ValueError as exc:
            raise ValueError(f"q_table[{key!r}]: {exc}") from None
    return cells
