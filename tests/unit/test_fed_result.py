"""A federation's typed result: report.json's layout, read back as it was written."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

from primia.federated.result import (
    FederationResult,
    FinalEvaluation,
    NodeEvaluation,
    NodeResult,
    RoundResult,
)

RECORD = {
    "round": 2,
    "contributors": ["site0", "site2"],
    "dropped": {"site3": "timed out"},
    "refused": {"site1": "budget_exceeded: ..."},
    "validation": {"loss": 0.61, "mean_auroc": 0.7},
    "seconds": 3.5,
}


def test_a_round_of_rounds_jsonl_lists_who_was_left_out_and_why_not() -> None:
    summary = RoundResult.of(RECORD)
    assert summary.left_out == ("site3", "site1")  # the dropped, then the refused
    assert (summary.validation_loss, summary.validation_mean_auroc) == (0.61, 0.7)
    assert RoundResult.of({"round": 1}).contributors == ()


def test_report_json_reads_back_as_the_result_it_was_written_from(tmp_path: Path) -> None:
    result = FederationResult(
        run_id="r1",
        rounds=(RoundResult.of(RECORD),),
        test=FinalEvaluation(
            examples=12,
            loss=0.5,
            accuracy=0.75,
            mean_auroc=None,
            auroc=MappingProxyType({"effusion": None, "nodule": 0.8}),
            per_node=MappingProxyType(
                {"site0": NodeEvaluation(12, 0.5, 0.75, MappingProxyType({"nodule": 0.8}))}
            ),
            seconds=1.0,
        ),
        nodes=MappingProxyType({"site0": NodeResult(2, 1.5, 10.0)}),
        model=tmp_path / "model.safetensors",
    )
    written = json.loads(json.dumps(result.to_mapping()))
    assert written["rounds"][0]["dropped"] == ["site3", "site1"]
    assert FederationResult.from_mapping(written) == result
    assert FederationResult.from_mapping({**written, "test": None}).test is None
