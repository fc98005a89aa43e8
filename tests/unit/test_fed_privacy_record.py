"""The coordinator's record of each node's ε only rises, and survives a restart (issue 22)."""

from pathlib import Path

import pytest

from primia.errors import ConfigError
from primia.federated.privacy_record import PrivacyRecord, below
from primia.federated.registry import NodeRegistry, NodeStatus
from primia.federated.tasks import PrivacyState
from primia.rpc import codec


def state(epsilon: float) -> PrivacyState:
    return PrivacyState(epsilon_spent=epsilon, epsilon_budget=10.0, delta=1e-5, accountant="rdp")


def test_the_record_only_rises_and_is_kept_in_the_run_directory(tmp_path: Path) -> None:
    path = tmp_path / "node-privacy.json"
    record = PrivacyRecord(path)
    assert record.recorded("a") is None
    record.update("a", state(1.2))
    record.update("a", state(0.0))  # a node that reports less does not lower it
    assert record.recorded("a") == 1.2
    assert PrivacyRecord(path).recorded("a") == 1.2  # a restarted coordinator has it


def test_a_damaged_record_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "node-privacy.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a record"):
        PrivacyRecord(path)


def test_below_allows_rounding_only() -> None:
    assert below(1.0, 1.5)
    assert not below(1.5, 1.5)
    assert not below(1.5 - 1e-12, 1.5)


def test_the_registry_records_what_nodes_report_and_shows_the_alarm(tmp_path: Path) -> None:
    registry = NodeRegistry(["a"], privacy_record=PrivacyRecord(tmp_path / "r.json"))
    registry.record_privacy("a", state(0.7))
    assert registry.recorded_epsilon("a") == 0.7
    registry.set_ledger_alarm("a", "refuses to train")
    (status,) = registry.statuses()
    assert status.ledger_alarm == "refuses to train"
    assert codec.status_from_proto(codec.status_to_proto(status)) == status


def test_alarm_details_are_bounded_and_escaped_for_the_log() -> None:
    text = codec.printable("a\nforged line" + "x" * 5000)
    assert "\n" not in text and len(text) < 2100
    assert NodeStatus("a").ledger_alarm == ""


def test_the_status_display_shows_the_alarm() -> None:
    from rich.console import Console

    from primia.federated.coordinator import FederationStatus
    from primia.federated.display import render

    node = NodeStatus("a", connected=True, activity="idle", ledger_alarm="below the 1.95")
    status = FederationStatus("run", "training", 1, 2, 1, [node], [])
    console = Console(width=200, record=True)
    console.print(render(status))
    assert "LEDGER: below the 1.95" in console.export_text()
