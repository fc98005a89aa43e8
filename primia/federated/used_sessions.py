"""The secure-aggregation sessions a node has taken part in: it takes part in each once.

The coordinator chooses a round's session id, and every signature of the protocol is
bound to it: the key advertisements (with the round view) and the survivor signatures
of the consistency round. A signature carries nothing else of its round, so a
coordinator that gave two rounds the same id could show a node, in the second, the
survivor signatures a quorum made in the first, on a survivor set no node of the second
round signed, and the node would reveal for it while the others reveal for another set:
the consistency round's "two sets cannot both reach a quorum" no longer holds, and with a
threshold of at most half the nodes a node's input comes back
(``test_a_reused_session_lets_earlier_signatures_unmask_a_node_so_nodes_refuse_it``).
A key advertisement of the first round (whose mask key the coordinator rebuilt when it
said that node dropped) would also verify in the second, when its weights and plan were
the same (a retried attempt).

A node therefore refuses a secure task whose session id it has already advertised keys
for. The ids are kept in ``STATE_DIR/secure-sessions`` (hex, one a line, rewritten
atomically before the keys leave the node), so a restart does not forget them. The set
grows by 16 bytes of id per secure round.
"""

from __future__ import annotations

import threading
from pathlib import Path

from primia.errors import ConfigError
from primia.federated.tasks import Refusal, TaskRefused
from primia.files import atomic_write_bytes

USED_SESSIONS_FILENAME = "secure-sessions"


class UsedSessions:
    """The session ids this node advertised keys for, persisted at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            lines = path.read_text().split()
        except FileNotFoundError:
            lines = []
        try:
            self._used = {bytes.fromhex(line) for line in lines}
        except ValueError as error:
            raise ConfigError(
                f"{path} is damaged ({error}): restore it from a backup; deleting it would "
                "let a coordinator replay the signatures of this node's earlier secure rounds"
            ) from error

    def claim(self, session: bytes) -> None:
        """Record ``session`` before this node takes part in it; :class:`TaskRefused`
        (a protocol violation) if it did already."""
        with self._lock:
            if session in self._used:
                raise TaskRefused(
                    Refusal.PROTOCOL_VIOLATION,
                    f"the coordinator reused secure-aggregation session {session.hex()} of an "
                    "earlier round: signatures of that round would pass this round's checks, "
                    "so this node takes part in no session twice",
                )
            used = self._used | {session}
            atomic_write_bytes(self.path, "".join(f"{s.hex()}\n" for s in sorted(used)).encode())
            self._used = used
