"""A consortium's own model end to end: a plug-in defined in a test module
(``plugin_models``, imported by module path as a consortium's package would be) is listed
in every node's ``policy.models``, trained in a real federation (mutual TLS, fast DP, 32 px,
one round), then served under real encrypted inference: the model owner's and the data
owner's CrypTen processes load the plug-in from its reference. A data owner that has not
loaded it refuses before any session, saying what to set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from conftest import Consortium, rounds_of, run_federation, start_inference_servers
from PIL import Image

from primia import pki
from primia.federated.coordinator_config import ModelConfig
from primia.federated.policy import AcceptedModel, NodePolicy
from primia.inference.party_config import (
    DataOwnerConfig,
)
from primia.models import registry
from primia.models.checkpoint import load_model
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.inference_client import predict

pytestmark = pytest.mark.slow

PLUGIN = "consortium_net=plugin_models:tiny"
TOLERANCE = 0.05
"""As the other encrypted inference tests: CrypTen's 16-bit fixed point."""


def test_a_plugin_trains_in_a_federation_and_runs_encrypted(
    consortium: Consortium, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    run = tmp_path / "run"
    server = CoordinatorServer(
        consortium.coordinator_config(
            run,
            rounds=1,
            roster=["site0", "site1"],
            model=ModelConfig(architecture="consortium_net", image_size=32, plugins=[PLUGIN]),
        )
    )
    port = server.start()
    for site in ("site0", "site1"):
        policy = NodePolicy(
            min_participants=2,
            allow_plugins=True,
            models=(AcceptedModel("consortium_net"),),  # a plug-in in the allow-list
        )
        consortium.start_node(
            consortium.node_config(
                site, port, tmp_path / f"state-{site}", plugins=[PLUGIN], policy=policy
            )
        )
    run_federation(server)
    assert rounds_of(run)[0]["contributors"] == ["site0", "site1"]
    model, spec = load_model(run / "model.safetensors")
    assert spec.architecture == "consortium_net"

    owner, dealer = start_inference_servers(
        consortium.pki_dir,
        run,
        owner_ports=(29650, 29674),
        dealer_ports=(29675, 29699),
        plugins=(PLUGIN,),
        allow_plugins=True,
    )
    try:
        data_owner = DataOwnerConfig(
            tls=pki.tls_files(consortium.pki_dir, "site2"),
            server=f"127.0.0.1:{owner.port}",
            plugins=(PLUGIN,),
            allow_plugins=True,
        )
        images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        prediction = predict(images, data_owner)
        with torch.no_grad():
            plain = model.eval()(images)
        assert (prediction.logits - plain).abs().max().item() < TOLERANCE

        refused = _predict_without_the_plugin(data_owner, tmp_path)
        assert refused.returncode == 2
        assert "'consortium_net' is not a built-in model" in refused.stderr
        assert "set allow_plugins = true" in refused.stderr
        assert len(owner.table.finished) + len(owner.table.running) == 1  # no new session
    finally:
        owner.stop()
        dealer.stop()


def _predict_without_the_plugin(
    data_owner: DataOwnerConfig, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """``primia infer predict`` as a data owner whose file lists no plug-in."""
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(image)
    config = tmp_path / "data-owner.toml"
    files = data_owner.tls
    config.write_text(
        tomli_w.dumps(
            {
                "server": data_owner.server,
                "tls": {
                    "ca": str(files.ca),
                    "certificate": str(files.certificate),
                    "key": str(files.key),
                },
            }
        )
    )
    command = ["infer", "predict", "--config", str(config), "--image", str(image)]
    return subprocess.run(
        [sys.executable, "-m", "primia", *command], capture_output=True, text=True, timeout=120
    )
