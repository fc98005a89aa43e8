"""primia's front door: one import per role, typed configurations in, frozen results out.

* the consortium's PKI — :class:`Consortium`;
* a federation — :class:`Coordinator` (with a :class:`CoordinatorConfig`) and a
  :class:`Node` at each hospital (with a :class:`NodeConfig`); the run's
  :class:`FederationResult`; how the server combines the rounds
  (:class:`ServerOptimizerConfig`: FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad), which
  nodes train each round (:class:`SamplingConfig`), and FedProx's μ at the nodes
  (``TrainPlan.proximal_mu``, bounded by each node's :class:`PlanLimits`);
* one hospital's local DP training — :func:`train_local`; its hyper-parameter search at
  a fixed ε — :func:`tune` (:class:`TuneConfig`, :class:`SearchSpace`; each trial charged);
* encrypted inference's parties — :mod:`primia.api.inference`;
* privacy audits — :mod:`primia.api.audit`;
* datasets as downloaded — :func:`open_dataset` (``format=``, :class:`ReadOptions`) and
  :func:`inspect_dataset` (what ``primia data inspect`` prints).

The commands of the ``primia`` CLI are thin layers over these. A federation of three
synthetic hospitals on this machine (the README's example; a test runs it)::

    from pathlib import Path
    from primia.api import (
        Consortium, Coordinator, CoordinatorConfig, DataSettings, ModelConfig, Node,
        NodeConfig, SynthConfig, TrainPlan, write_synthetic_dataset,
    )

    write_synthetic_dataset(Path("data"), SynthConfig(sites=3, patients_per_site=30, size=32))
    consortium = Consortium.create(Path("pki"), name="chest-xray")
    consortium.issue("coordinator", role="coordinator")
    sites = ["site0", "site1", "site2"]
    coordinator = Coordinator(CoordinatorConfig(
        tls=consortium.tls("coordinator"), roster=sites, listen="127.0.0.1:0", rounds=2,
        model=ModelConfig(architecture="cnn", image_size=32), plan=TrainPlan(batch_size=32),
    ))
    port = coordinator.start()
    for site in sites:
        consortium.issue(site, role="node")
        Node(NodeConfig(
            tls=consortium.tls(site), coordinator=f"127.0.0.1:{port}",
            data=DataSettings(Path("data"), site=site), state_dir=Path(f"state-{site}"),
            exit_when_done=True,
        )).start()
    result = coordinator.run()
    print(result.test.mean_auroc, result.nodes["site0"].epsilon_spent)
"""

from primia.api.consortium import Consortium
from primia.api.federation import Coordinator, Node
from primia.data import Inspection, ReadOptions, inspect_dataset, open_dataset
from primia.data.synth import SynthConfig
from primia.data.synth import write_dataset as write_synthetic_dataset
from primia.federated.coordinator_config import (
    CoordinatorConfig,
    ModelConfig,
    SecureAggregationConfig,
)
from primia.federated.data_owner import ComputeSettings, DataSettings, PrivacySettings
from primia.federated.plan import DPPlan, PlanLimits, TrainPlan
from primia.federated.result import (
    FederationResult,
    FinalEvaluation,
    NodeEvaluation,
    NodeResult,
    RoundResult,
)
from primia.federated.sampling import SamplingConfig
from primia.federated.server_optimizer import ServerOptimizerConfig
from primia.pki import TLSFiles
from primia.rpc.node_config import NodeConfig
from primia.train import DPConfig, TrainConfig, train_local
from primia.train.tune import SearchSpace, TuneConfig, TuneResult, tune

__all__ = [
    "ComputeSettings",
    "Consortium",
    "Coordinator",
    "CoordinatorConfig",
    "DPConfig",
    "DPPlan",
    "DataSettings",
    "FederationResult",
    "FinalEvaluation",
    "Inspection",
    "ModelConfig",
    "Node",
    "NodeConfig",
    "NodeEvaluation",
    "NodeResult",
    "PlanLimits",
    "PrivacySettings",
    "ReadOptions",
    "RoundResult",
    "SamplingConfig",
    "SearchSpace",
    "SecureAggregationConfig",
    "ServerOptimizerConfig",
    "SynthConfig",
    "TLSFiles",
    "TrainConfig",
    "TrainPlan",
    "TuneConfig",
    "TuneResult",
    "inspect_dataset",
    "open_dataset",
    "train_local",
    "tune",
    "write_synthetic_dataset",
]
