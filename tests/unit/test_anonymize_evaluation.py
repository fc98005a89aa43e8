"""The anonymization evaluation says when its attacker or its judge is too weak to count."""

from __future__ import annotations

from primia.anonymize.evaluation import STRONG, weak_measures


def test_a_weak_attacker_or_judge_is_named_in_the_cautions() -> None:
    assert weak_measures(STRONG, 0.95) == []
    weak_judge = weak_measures(0.9, 0.61)
    assert len(weak_judge) == 1 and "judge is weak" in weak_judge[0] and "0.610" in weak_judge[0]
    both = weak_measures(0.7, 0.6)
    assert "attacker is weak" in both[0] and "judge is weak" in both[1]
