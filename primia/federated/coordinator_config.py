"""The coordinator's configuration (``coordinator.toml``).

Example::

    run_dir = "runs/federation"
    listen = "0.0.0.0:50051"
    roster = ["hospital-a", "hospital-b", "hospital-c"]
    rounds = 5
    min_nodes = 2
    aggregation = "secure"            # the default; "plaintext" only for comparison

    [secure_aggregation]              # all optional
    ring_bits = 32
    clip = 8.0
    threshold = 0                     # 0: a majority of the round's nodes

    [server_optimizer]                # all optional; see primia/federated/server_optimizer.py
    name = "fedadam"                  # fedavg (default), fedavgm, fedadam, fedyogi, fedadagrad
    lr = 0.03                         # server learning rate η (1.0 for fedavg/fedavgm)
    momentum = 0.9
    beta2 = 0.99
    tau = 0.001

    [sampling]                        # optional: train a random subset each round
    fraction = 1.0                    # of the connected nodes (count = 0), at least min_nodes
    count = 0                         # or this many; no privacy amplification is claimed

    [tls]
    ca = "pki/ca.pem"
    certificate = "pki/coordinator.pem"
    key = "pki/coordinator.key"

    [model]
    architecture = "resnet9"
    image_size = 64
    labels = ["pneumonia", "effusion", "cardiomegaly", "nodule"]

    [plan]
    epochs = 2
    batch_size = 64
    lr = 0.003
    [plan.dp]
    epsilon = 1.0
    delta = 1e-5

    [limits]                          # all optional: what one certificate may cost
    max_calls = 0                     # concurrent calls in all; 0: 2 x roster + 16, >= 64
    max_calls_per_peer = 4            # per certificate
    first_message_s = 10.0            # a call's first message must come this soon
    max_blobs_kept = 2                # per Join stream, awaiting a result

    [status_access]                   # all optional: who sees what of `primia status`
    everything = ["coordinator"]
    own_row = ["node"]

Relative paths are taken from the file's folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from primia.config import load_toml, rebase_paths
from primia.crypto.ring import ring_bits_problem
from primia.data.synth import FINDINGS
from primia.errors import ConfigError
from primia.federated.plan import TrainPlan, check_coordinator_plan
from primia.federated.sampling import SamplingConfig
from primia.federated.server_optimizer import ServerOptimizerConfig
from primia.federated.status_access import StatusAccess
from primia.federated.tasks import FederationPlan
from primia.limits import ServerLimits
from primia.models import BUILT_IN_MODELS, model_names
from primia.models.checkpoint import ModelSpec
from primia.models.plugins import load_plugins
from primia.pki import TLSFiles
from primia.train.model_check import check_model_targets
from primia.train.tracking import TrackingConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    """The global model; every node's data must have these labels."""

    architecture: str = "resnet9"
    width: int | None = None
    ws: bool = False
    """Weight-standardised convolutions (:class:`~primia.models.layers.WSConv2d`)."""
    image_size: int = 64
    task: Literal["binary", "multilabel", "multiclass"] = "multilabel"
    labels: list[str] = field(default_factory=lambda: list(FINDINGS))
    plugins: list[str] = field(default_factory=list)
    """Model plug-ins the consortium uses (``NAME=package.module:factory`` or an entry
    point's ``NAME``; :mod:`primia.models.plugins`): loaded before ``architecture`` is
    looked up. Every node lists the same ones in its own ``plugins``."""

    def spec(self) -> ModelSpec:
        load_plugins(self.plugins)
        if self.architecture not in model_names():
            raise ConfigError(
                f"model.architecture {self.architecture!r} is unknown; choose one of "
                f"{', '.join(model_names())}"
            )
        if not self.labels:
            raise ConfigError("model.labels is empty; list the labels the model predicts")
        if self.task == "binary" and len(self.labels) != 1:
            raise ConfigError("a binary model has exactly one label in model.labels")
        return ModelSpec(
            architecture=self.architecture,
            num_outputs=1 if self.task == "binary" else len(self.labels),
            width=self.width,
            image_size=self.image_size,
            task=self.task,
            label_names=tuple(self.labels),
            ws=self.ws,
        )


@dataclass(frozen=True)
class SecureAggregationConfig:
    """Parameters of secure aggregation (see :mod:`primia.crypto.secagg`)."""

    ring_bits: int = 32
    """k of the ring Z_2^k: 32 uploads as much as float32; 64 for finer resolution."""
    clip: float = 8.0
    """Each value of a weighted update is clipped to [-clip, clip]; clipped values are
    counted in ``rounds.jsonl``. The resolution is clip·n/2^(k-1) for n nodes."""
    threshold: int = 0
    """Nodes needed to finish (and to collude to learn anything); 0: a majority."""
    step_timeout_s: float = 120.0
    """How long the share exchange and the unmasking wait for the nodes (small messages);
    receiving the weights with advertising keys, and training with the masked upload,
    each have ``round_timeout_s``."""

    def __post_init__(self) -> None:
        if problem := ring_bits_problem(self.ring_bits):
            raise ConfigError(f"secure_aggregation.ring_bits {problem}")
        if not self.clip > 0:
            raise ConfigError(f"secure_aggregation.clip must be positive, not {self.clip}")
        if self.threshold < 0 or self.threshold == 1:
            raise ConfigError(
                "secure_aggregation.threshold must be 0 (a majority) or at least 2, "
                f"not {self.threshold}"
            )
        if self.step_timeout_s <= 0:
            raise ConfigError("secure_aggregation.step_timeout_s must be positive")


@dataclass(frozen=True)
class CoordinatorConfig:
    tls: TLSFiles
    roster: list[str]
    """The names (in node certificates) allowed to join."""
    run_dir: Path = Path("runs/federation")
    listen: str = "127.0.0.1:50051"
    rounds: int = 3
    min_nodes: int = 2
    """A round needs updates from at least this many nodes, else it is tried again."""
    node_wait_s: float = 600.0
    """How long a round waits for ``min_nodes`` nodes to be connected."""
    startup_wait_s: float = 60.0
    """Before its first round, the coordinator waits this long for the whole roster (then
    starts with whoever is there, if at least ``min_nodes``)."""
    rejoin_wait_s: float = 0.0
    """Before each later round, once ``min_nodes`` are connected, wait up to this long for
    the rest of the roster, so a node that lost its link for a moment (and reconnects with
    back-off) takes part again rather than missing every short round. 0: start at once."""
    round_timeout_s: float = 3600.0
    """A node that has not answered a task by then is a dropout."""
    max_attempts: int = 3
    """Tries per round before the federation stops with an error."""
    seed: int = 0
    """Fixes the initial global weights."""
    init: Path | None = None
    """Start the global model from this checkpoint (e.g. pre-trained on public or synthetic
    data) instead of a seeded random one; its spec must match ``model``'s."""
    aggregation: Literal["secure", "plaintext"] = "secure"
    """``secure``: the coordinator learns only the sum of the updates (the default);
    ``plaintext``: it sees every node's update (for comparison and debugging only)."""
    secure_aggregation: SecureAggregationConfig = field(default_factory=SecureAggregationConfig)
    server_optimizer: ServerOptimizerConfig = field(default_factory=ServerOptimizerConfig)
    """How the securely aggregated mean update becomes the new global weights (FedAvg by
    default; FedAvgM, FedAdam, FedYogi, FedAdagrad); it reads only the aggregate."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Which connected nodes train each round (all, by default); see
    :mod:`primia.federated.sampling` for why it claims no privacy amplification."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow logging of the run beside TensorBoard, same tags (off by default)."""
    final_test: bool = True
    """After the last round, evaluate on every node's test split."""
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    plan: TrainPlan = field(default_factory=TrainPlan)
    limits: ServerLimits = field(default_factory=ServerLimits)
    """What one certificate holder may cost the server (see docs/operator-guide.md)."""
    status_access: StatusAccess = field(default_factory=StatusAccess)
    """Which certificate roles see which part of ``primia status``."""

    def __post_init__(self) -> None:
        if not self.roster:
            raise ConfigError("roster is empty; list the node names allowed to join")
        if self.limits.max_calls and self.limits.max_calls < len(self.roster) + 8:
            raise ConfigError(
                f"limits.max_calls={self.limits.max_calls} is too few for a roster of "
                f"{len(self.roster)} (each node holds a Join stream, and status and probe "
                f"calls need room); set it to at least {len(self.roster) + 8}"
            )
        if len(set(self.roster)) != len(self.roster):
            raise ConfigError("roster lists a name twice")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1, got {self.rounds}")
        if not 1 <= self.min_nodes <= len(self.roster):
            raise ConfigError(
                f"min_nodes={self.min_nodes} must be between 1 and the roster's "
                f"{len(self.roster)} nodes"
            )
        if self.aggregation not in ("secure", "plaintext"):
            raise ConfigError(
                f"aggregation {self.aggregation!r} is unknown; use 'secure' (the default) or "
                "'plaintext'"
            )
        if self.aggregation == "secure" and self.min_nodes < 2:
            raise ConfigError(
                "secure aggregation needs min_nodes of at least 2 (the sum of one node's "
                "update is that update); raise min_nodes or set aggregation = 'plaintext'"
            )
        threshold = self.secure_aggregation.threshold
        if self.aggregation == "secure" and threshold > len(self.roster):
            raise ConfigError(
                f"secure_aggregation.threshold={threshold} exceeds the roster's "
                f"{len(self.roster)} nodes"
            )
        for name in ("node_wait_s", "startup_wait_s", "round_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.rejoin_wait_s < 0:
            raise ConfigError("rejoin_wait_s must be 0 or positive")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        spec = self.model.spec()
        if self.model.plugins and spec.architecture not in BUILT_IN_MODELS:
            check_plugin(spec)
        check_coordinator_plan(self.plan)

    def federation_plan(self) -> FederationPlan:
        """What every round of this run asks of a node (sent to it when it joins)."""
        return FederationPlan(
            spec=self.model.spec(),
            plan=self.plan,
            secure=self.aggregation == "secure",
            roster_size=len(self.roster),
            min_nodes=self.min_nodes,
            threshold=self.secure_aggregation.threshold,
        )


def check_plugin(spec: ModelSpec) -> None:
    """Refuse, before any round, a plug-in model the nodes' DP-SGD cannot train (the
    fast path, their default, or Opacus), with the reasons; warn when it cannot run
    encrypted."""
    check = check_model_targets(spec.build(), image_size=spec.image_size)
    if check.dp_sgd or check.fast_dp:
        raise ConfigError(
            f"model plug-in {spec.architecture!r} cannot be trained with DP-SGD:\n"
            + check.summary()
        )
    if check.encrypted:
        log.warning(
            "model plug-in %r cannot run encrypted inference: %s",
            spec.architecture,
            "; ".join(check.encrypted),
        )


def load_coordinator_config(path: Path) -> CoordinatorConfig:
    config = load_toml(CoordinatorConfig, path)
    return rebase_paths(config, path.parent)
