"""A decision's one JSON form: stored with its signal, read back for a re-submit, answered by the API."""
from __future__ import annotations

from dataclasses import fields

from backend.api.schemas import DecisionOut
from backend.domain.model import Decision, Side


def test_a_decision_survives_its_json_and_the_api_answers_every_field_but_the_equity():
    decision = Decision(True, "SPY", Side.SELL, 2_500.0, 5.0, 1.25, 500.0, 510.0, 480.0, "qlearning", "why",
                        "state", "2.5", 0.01, "abc", ("risk",), 2_000.0, 1.25, False, "dec-1", "rl")
    stored = decision.to_json()
    assert stored["side"] == "sell" and stored["capped_by"] == ["risk"]
    assert Decision.from_json(stored) == decision
    assert set(DecisionOut.model_fields) == {f.name for f in fields(Decision)} - {"equity"}  # derived from it
    answered = DecisionOut.model_validate(stored).model_dump(mode="json")
    assert answered == {k: v for k, v in stored.items() if k != "equity"}
