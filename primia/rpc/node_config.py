"""A data-owner node's configuration (``node.toml``).

Example::

    coordinator = "coordinator.consortium.example:50051"
    coordinator_name = "coordinator"     # the name in the coordinator's certificate
    state_dir = "state"                  # the privacy ledger lives here

    [tls]
    ca = "pki/ca.pem"
    certificate = "pki/hospital-a.pem"
    key = "pki/hospital-a.key"

    [data]
    path = "/data/radiographs"           # a manifest.csv, class folders or DICOM files
    label_columns = ["pneumonia", "effusion", "cardiomegaly", "nodule"]

    [privacy]
    epsilon_budget = 8.0                 # over all rounds of all federations
    delta = 1e-5

    [limits]
    require_dp = true
    max_epochs = 10
    min_noise_multiplier = 0.5           # the least DP noise this node trains with
    max_epsilon_per_round = 2.0
    max_epsilon_per_run = 6.0

    [policy]                             # what this node takes part in (see docs)
    aggregation = ["secure"]             # add "plaintext" only to let the coordinator see updates
    min_participants = 3
    min_threshold = 2                    # and at least a strict majority of the participants
    models = [{ architecture = "resnet9" }]   # empty: the first model trained is pinned

    [compute]
    device = "auto"                      # CUDA when present

Relative paths are taken from the file's folder. The node's name is the one in its
certificate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from primia.config import load_toml, rebase_paths
from primia.errors import ConfigError
from primia.federated.data_owner import ComputeSettings, DataSettings, PrivacySettings
from primia.federated.plan import PlanLimits
from primia.federated.policy import NodePolicy, check_policy_models
from primia.models.plugins import load_allowed_plugins
from primia.pki import TLSFiles


@dataclass(frozen=True)
class NodeConfig:
    tls: TLSFiles
    data: DataSettings
    coordinator: str = "127.0.0.1:50051"
    coordinator_name: str = "coordinator"
    state_dir: Path = Path("node-state")
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    limits: PlanLimits = field(default_factory=PlanLimits)
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    policy: NodePolicy = field(default_factory=NodePolicy)
    reconnect_max_s: float = 30.0
    """The longest wait between attempts to reach the coordinator (back-off doubles to it)."""
    exit_when_done: bool = False
    """Exit once a federation finishes, instead of waiting for the next."""
    plugins: list[str] = field(default_factory=list)
    """Model plug-ins to load (``NAME=package.module:factory`` or an entry point's
    ``NAME``; :mod:`primia.models.plugins`); needs ``policy.allow_plugins``."""

    def __post_init__(self) -> None:
        load_allowed_plugins(
            self.plugins, allowed=self.policy.allow_plugins, switch="policy.allow_plugins"
        )
        check_policy_models(self.policy)
        if ":" not in self.coordinator:
            raise ConfigError(f"coordinator {self.coordinator!r} must be HOST:PORT")
        if self.reconnect_max_s <= 0:
            raise ConfigError("reconnect_max_s must be positive")


def load_node_config(path: Path) -> NodeConfig:
    return rebase_paths(load_toml(NodeConfig, path), path.parent)
