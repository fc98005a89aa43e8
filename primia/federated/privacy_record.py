"""The coordinator's record of each node's spent ε in a run: a check against a node whose
own ledger forgot releases (issue 22).

Every ε a node reports — in its Hello and with each training result — raises the
record (never lowers it); the record is kept in the run directory
(``node-privacy.json``, written atomically), so a restarted coordinator still has it.
When a node joins, the coordinator sends it the recorded figure
(``Welcome.recorded_epsilon_spent``); a node whose ledger reports less refuses to train
(:meth:`primia.federated.data_owner.DataOwner.check_coordinator_record`). This catches a
node whose ledger *and* its anchor were rewritten consistently — by root on the node, or
by deleting both — which the ledger's own checks cannot.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

from primia.config import atomic_write_bytes
from primia.errors import ConfigError
from primia.federated.tasks import PrivacyState

FILENAME = "node-privacy.json"
TOLERANCE = 1e-9
"""Relative slack when comparing ε: the same ledger composes to the same float, but a
figure that went through JSON and protobuf is compared with a little room."""


def below(ledger_epsilon: float, recorded_epsilon: float) -> bool:
    """Whether ``ledger_epsilon`` is less than ``recorded_epsilon`` (beyond rounding)."""
    return ledger_epsilon < recorded_epsilon - TOLERANCE * max(1.0, abs(recorded_epsilon))


class PrivacyRecord:
    """Node name → the highest ε it reported in this run (with its δ and accountant)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._nodes: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                self._nodes = {
                    str(name): {
                        "epsilon_spent": float(entry["epsilon_spent"]),
                        "delta": float(entry["delta"]),
                        "accountant": str(entry["accountant"]),
                    }
                    for name, entry in data["nodes"].items()
                }
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise ConfigError(
                    f"{path} is not a record of the nodes' privacy ({error}); restore it from "
                    "the run directory's backup (deleting it forgets what the nodes spent)"
                ) from None

    def recorded(self, name: str) -> float | None:
        with self._lock:
            entry = self._nodes.get(name)
        return None if entry is None else float(entry["epsilon_spent"])

    def update(self, name: str, privacy: PrivacyState) -> None:
        """Raise ``name``'s figure to ``privacy.epsilon_spent`` if that is higher."""
        if not math.isfinite(privacy.epsilon_spent):
            return
        with self._lock:
            entry = self._nodes.get(name)
            if entry is not None and privacy.epsilon_spent <= entry["epsilon_spent"]:
                return
            self._nodes[name] = {
                "epsilon_spent": privacy.epsilon_spent,
                "delta": privacy.delta,
                "accountant": privacy.accountant,
            }
            payload = json.dumps({"nodes": self._nodes}, indent=2, sort_keys=True) + "\n"
            atomic_write_bytes(self.path, payload.encode())
