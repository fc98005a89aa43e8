"""Encrypted inference through the gRPC services: a model owner and a crypto provider
serving on loopback with mutual TLS, a data owner predicting, every party a real process.

The tolerance on the logits is the one justified in test_encrypted_inference.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tomli_w
import torch
from conftest import start_inference_servers
from PIL import Image

from primia import pki
from primia.errors import DataError
from primia.inference import processes
from primia.inference.party_config import (
    DataOwnerConfig,
)
from primia.inference.sessions import SessionState
from primia.launch import free_port
from primia.models.checkpoint import ModelSpec, save_model
from primia.rpc.generated import inference_pb2 as pb
from primia.rpc.generated import inference_pb2_grpc as pb_grpc
from primia.rpc.inference_client import PredictionFailed, describe_model, link_plan, predict
from primia.rpc.inference_server import InferenceServer
from primia.rpc.tls import secure_channel

pytestmark = pytest.mark.slow

TOLERANCE = 0.05
SPEC = ModelSpec("cnn", num_outputs=3, width=4, image_size=32, label_names=("a", "b", "c"))


@dataclass
class Parties:
    model: torch.nn.Module
    model_owner: InferenceServer
    crypto_provider: InferenceServer
    data_owner: DataOwnerConfig
    pki_dir: Path


@pytest.fixture
def parties(
    consortium_pki: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Parties]:
    torch.manual_seed(0)
    model = SPEC.build().eval()
    model_path = tmp_path / "model.safetensors"
    save_model(model_path, model, SPEC)
    timeout = getattr(request, "param", 120.0)
    owner, dealer = start_inference_servers(consortium_pki, model_path, session_timeout_s=timeout)
    data_owner = DataOwnerConfig(
        tls=pki.tls_files(consortium_pki, "site0"), server=f"127.0.0.1:{owner.port}"
    )
    yield Parties(model, owner, dealer, data_owner, consortium_pki)
    owner.stop()
    dealer.stop()


def _images(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 1, 32, 32, generator=generator)


def _wait_until_ended(server: InferenceServer, timeout_s: float) -> list[SessionState]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        server.table.reap()
        if not server.table.running and server.table.finished:
            return [session.state for session in server.table.finished]
        time.sleep(0.2)
    raise AssertionError(f"{server.name}: sessions still running after {timeout_s} s")


def test_prediction_over_grpc_matches_plaintext(parties: Parties) -> None:
    images = _images(3)
    served = describe_model(parties.data_owner)
    assert served.spec == SPEC and served.max_batch == 4

    prediction = predict(images, parties.data_owner)

    with torch.no_grad():
        plain = parties.model(images)
    assert (prediction.logits - plain).abs().max().item() < TOLERANCE
    assert torch.allclose(prediction.probabilities, plain.sigmoid(), atol=TOLERANCE)
    assert prediction.stats.role == "data owner" and prediction.stats.rounds > 0
    assert _wait_until_ended(parties.model_owner, 30) == [SessionState.DONE]
    assert _wait_until_ended(parties.crypto_provider, 30) == [SessionState.DONE]


def test_concurrent_sessions_do_not_mix(parties: Parties) -> None:
    batches = [_images(2, seed=1), _images(2, seed=2)]
    results: dict[int, torch.Tensor] = {}

    def run(index: int) -> None:
        results[index] = predict(batches[index], parties.data_owner).logits

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)

    with torch.no_grad():
        for index, batch in enumerate(batches):
            assert (results[index] - parties.model(batch)).abs().max().item() < TOLERANCE
    assert _wait_until_ended(parties.model_owner, 30) == [SessionState.DONE] * 2
    # Two sessions of their own (each may reuse the other's port once that one has ended).
    assert len({session.id for session in parties.model_owner.table.finished}) == 2


def test_wrong_image_size_is_refused_before_any_session(parties: Parties) -> None:
    with pytest.raises(DataError, match="32×32 images, got 48×48"):
        predict(torch.rand(1, 1, 48, 48), parties.data_owner)
    with pytest.raises(DataError, match="1-channel images, got 3"):
        predict(torch.rand(1, 3, 32, 32), parties.data_owner)
    with pytest.raises(DataError, match="1 to 4 images, got 5"):
        predict(torch.rand(5, 1, 32, 32), parties.data_owner)
    with pytest.raises(DataError, match=r"in \[0, 1\]"):
        predict(torch.rand(1, 1, 32, 32) * 255, parties.data_owner)
    assert not parties.model_owner.table.running and not parties.model_owner.table.finished


def test_the_server_refuses_a_bad_request_itself_and_keeps_serving(parties: Parties) -> None:
    with _stub(parties, "site1") as stub:
        for shape, message in (([1, 1, 64, 64], "64×64"), ([2, 1, 32], "shape")):
            with pytest.raises(grpc.RpcError) as refused:
                stub.OpenSession(pb.SessionRequest(input_shape=shape), timeout=30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in (refused.value.details() or "")
    assert predict(_images(1), parties.data_owner).logits.shape == (1, 3)


def test_certificates_with_the_wrong_role_are_refused(parties: Parties) -> None:
    with _stub(parties, "coordinator") as stub, pytest.raises(grpc.RpcError) as refused:
        stub.Describe(pb.DescribeRequest(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    dealer_address = f"127.0.0.1:{parties.crypto_provider.port}"
    files = pki.tls_files(parties.pki_dir, "site1")
    with secure_channel(dealer_address, files, server_name="crypto-provider") as channel:
        request = pb.DealRequest(
            session_id="x", rendezvous_port=29700, deadline_s=5, data_owner_name="site1"
        )
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.CryptoProviderStub(channel).Deal(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert not parties.crypto_provider.table.running


@pytest.mark.parametrize("parties", [15.0], indirect=True)
def test_a_data_owner_that_vanishes_does_not_hang_the_servers(parties: Parties) -> None:
    images = _images(2)
    with _stub(parties, "site1") as stub:
        absent = stub.OpenSession(pb.SessionRequest(input_shape=list(images.shape)), timeout=120)
        joined = stub.OpenSession(pb.SessionRequest(input_shape=list(images.shape)), timeout=120)
    # one data owner never joins; the other joins and is killed mid-session
    party = processes.PartyProcess(
        "data owner",
        processes.data_owner,
        (link_plan(joined, _config(parties, "site1")), SPEC, images.numpy()),
        threads=1,
    )
    party.start()
    # Killed while it starts or joins: with warm parties a 2-image session of this small
    # model can finish within 4 s, and a finished session is not a vanished data owner.
    time.sleep(1.0)
    party.kill()

    states = _wait_until_ended(parties.model_owner, 60)
    assert len(states) == 2 and SessionState.DONE not in states
    assert absent.session_id != joined.session_id
    _wait_until_ended(parties.crypto_provider, 60)
    # and the model owner serves the next data owner
    assert predict(images, parties.data_owner).logits.shape == (2, 3)


def test_an_unreachable_crypto_provider_is_reported(consortium_pki: Path, tmp_path: Path) -> None:
    model_path = tmp_path / "model.safetensors"
    save_model(model_path, SPEC.build(), SPEC)
    owner, dealer = start_inference_servers(consortium_pki, model_path, dealer_port=free_port())
    try:
        config = DataOwnerConfig(
            tls=pki.tls_files(consortium_pki, "site0"), server=f"127.0.0.1:{owner.port}"
        )
        with pytest.raises(PredictionFailed, match=r"UNAVAILABLE.*crypto provider"):
            predict(_images(1), config)
        owner.table.reap()
        assert not owner.table.running
    finally:
        owner.stop()
        dealer.stop()


def _config(parties: Parties, name: str) -> DataOwnerConfig:
    return DataOwnerConfig(
        tls=pki.tls_files(parties.pki_dir, name), server=parties.data_owner.server
    )


class _stub:
    """A ModelOwner stub with ``name``'s certificate, as a context manager."""

    def __init__(self, parties: Parties, name: str) -> None:
        files = pki.tls_files(parties.pki_dir, name)
        address = f"127.0.0.1:{parties.model_owner.port}"
        self._channel = secure_channel(address, files, server_name="model-owner")

    def __enter__(self) -> pb_grpc.ModelOwnerStub:
        return pb_grpc.ModelOwnerStub(self._channel)

    def __exit__(self, *exc: object) -> None:
        self._channel.close()


def test_the_demo_runs_the_commands_as_separate_processes(tmp_path: Path) -> None:
    """`primia infer demo`: `primia infer crypto-provider` and `primia infer serve` as
    child processes, configured by the files a deployment would use."""
    from primia.demo.inference import run_inference_demo

    model_path = tmp_path / "model.safetensors"
    save_model(model_path, SPEC.build(), SPEC)

    result = run_inference_demo(model_path, tmp_path / "demo", images=2)

    assert result.encrypted.shape == (2, 3)
    assert result.max_difference < TOLERANCE
    written = json.loads((tmp_path / "demo" / "predictions.json").read_text())
    assert [row["image"] for row in written["images"]] == ["image-0.png", "image-1.png"]
    assert set(written["images"][0]["encrypted"]) == {"a", "b", "c"}
    assert "session" in (tmp_path / "demo" / "logs" / "model-owner.log").read_text()


def test_predict_command_refuses_a_wrong_image_before_a_session(
    parties: Parties, tmp_path: Path
) -> None:
    image = tmp_path / "large.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(image)
    config = tmp_path / "data-owner.toml"
    files = parties.data_owner.tls
    config.write_text(
        tomli_w.dumps(
            {
                "server": parties.data_owner.server,
                "tls": {
                    "ca": str(files.ca),
                    "certificate": str(files.certificate),
                    "key": str(files.key),
                },
            }
        )
    )
    arguments = ["infer", "predict", "--config", str(config), "--image", str(image)]
    completed = subprocess.run(
        [sys.executable, "-m", "primia", *arguments], capture_output=True, text=True
    )
    assert completed.returncode == 2
    assert "is 64×64; the model takes 32×32" in completed.stderr
    assert not parties.model_owner.table.running and not parties.model_owner.table.finished
