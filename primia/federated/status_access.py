"""Who may see what of a federation's status (``GetStatus``, ``primia status``).

The status names every node, its device, its activity and the ε it has spent: one
hospital's spending and schedule are not every other member's business. By the
certificate's role (``[status_access]`` of the coordinator's config):

* ``everything`` (default: ``coordinator``, the consortium's operators, who run
  ``primia status`` with the coordinator's certificate or one of that role): every node;
* ``own_row`` (default: ``node``): the run, the rounds (their contributors are the
  roster, which every member knows) and the caller's own row only;
* any other role (default: ``inference``): nothing; the call is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from primia.errors import ConfigError
from primia.pki import ROLES

if TYPE_CHECKING:  # the coordinator's module imports its config, which imports this one
    from primia.federated.coordinator import FederationStatus


class StatusDenied(Exception):
    """The caller's role may not see the status; the message says which roles may."""


@dataclass(frozen=True)
class StatusAccess:
    everything: tuple[str, ...] = ("coordinator",)
    """Roles that see every node's row."""
    own_row: tuple[str, ...] = ("node",)
    """Roles that see the run, the rounds and their own row."""

    def __post_init__(self) -> None:
        for key in ("everything", "own_row"):
            unknown = set(getattr(self, key)) - set(ROLES)
            if unknown:
                raise ConfigError(
                    f"status_access.{key} names unknown role(s) {', '.join(sorted(unknown))}; "
                    f"roles are {', '.join(ROLES)}"
                )

    def view(self, status: FederationStatus, *, role: str, name: str) -> FederationStatus:
        """What a caller with ``role`` and ``name`` may see of ``status``; raises
        :class:`StatusDenied` if nothing."""
        if role in self.everything:
            return status
        if role in self.own_row:
            return replace(status, nodes=[node for node in status.nodes if node.name == name])
        allowed = sorted(set(self.everything) | set(self.own_row))
        raise StatusDenied(
            f"{name} has role {role}; the status is shown to roles "
            f"{', '.join(allowed) or 'none'} (status_access in the coordinator's config)"
        )
