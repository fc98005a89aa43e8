"""``primia infer demo``: the three parties of encrypted inference on this machine.

The crypto provider and the model owner start as separate ``primia infer`` processes, with
certificates and configuration files written to the demo folder (the same files three
machines would use); this process is the data owner. It asks for a prediction on a few
synthetic radiographs, then compares it with the plaintext model's output::

    runs/infer-demo/
      pki/                       CA, model-owner, crypto-provider, data-owner (role inference)
      model-owner.toml  crypto-provider.toml  data-owner.toml
      images/image-N.png         the data owner's radiographs
      predictions.json           encrypted and plaintext probabilities, per image
      logs/                      the two servers' logs
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from primia import pki
from primia.config import write_toml
from primia.data.synth import SynthConfig, generate
from primia.errors import PrimiaError
from primia.inference.inputs import load_images, output_names, probabilities
from primia.inference.party_config import (
    CryptoProviderConfig,
    DataOwnerConfig,
    ModelOwnerConfig,
    ModelOwnerEntry,
    load_data_owner_config,
)
from primia.inference.sessions import load_served_model
from primia.launch import free_port, start_primia, stop_all, tail
from primia.models.checkpoint import find_checkpoint, load_model
from primia.rpc.inference_client import PredictionFailed, describe_model, predict

PARTIES = ("model-owner", "crypto-provider", "data-owner")
STARTUP_TIMEOUT_S = 120.0


class InferenceDemoFailed(PrimiaError):
    """A server of the demo did not start; the message holds the end of its log."""


@dataclass(frozen=True)
class InferenceDemoResult:
    out: Path
    encrypted: torch.Tensor
    """Probabilities from encrypted inference, one row per image."""
    plaintext: torch.Tensor
    label_names: tuple[str, ...]
    seconds: float
    """The data owner's wait for its prediction."""

    @property
    def max_difference(self) -> float:
        return float((self.encrypted - self.plaintext).abs().max())


def run_inference_demo(model: Path, out: Path, *, images: int = 4) -> InferenceDemoResult:
    """Serve ``model`` (a checkpoint, run directory or demo folder) encrypted to a data owner
    holding ``images`` synthetic radiographs; everything is written under ``out``."""
    spec, _ = load_served_model(model)  # fails early, before any process starts
    out.mkdir(parents=True, exist_ok=True)
    _issue_certificates(out / "pki")
    model_owner_port, dealer_port = free_port(), free_port()
    _write_configs(out, model_owner_port, dealer_port)
    paths = _write_images(out / "images", images, spec.image_size)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    children = [
        start_primia(
            "crypto-provider",
            ["infer", "crypto-provider", "--config", "crypto-provider.toml"],
            out,
            logs,
        ),
        start_primia(
            "model-owner",
            ["infer", "serve", "--model", str(model.resolve()), "--config", "model-owner.toml"],
            out,
            logs,
        ),
    ]
    try:
        config = load_data_owner_config(out / "data-owner.toml")
        _wait_until_serving(config, children, logs)
        batch = load_images(paths, spec)
        prediction = predict(batch, config)
    finally:
        stop_all(children)
    plain_model, _ = load_model(find_checkpoint(model))
    with torch.no_grad():
        plaintext = probabilities(plain_model.eval()(batch), spec.task)
    labels = output_names(spec)
    result = InferenceDemoResult(
        out, prediction.probabilities, plaintext, labels, prediction.seconds
    )
    _write_predictions(out / "predictions.json", paths, result)
    return result


def _issue_certificates(directory: Path) -> None:
    if (directory / "ca.pem").exists():
        return
    pki.init_ca(directory, "primia-inference-demo")
    for party in PARTIES:
        pki.issue(directory, party, "inference")


def _write_configs(out: Path, model_owner_port: int, dealer_port: int) -> None:
    """The three parties' configuration files, built as the typed configs that
    ``primia infer serve``, ``crypto-provider`` and ``predict`` read back."""
    pki_dir = Path("pki")
    configs = {
        "model-owner": ModelOwnerConfig(
            tls=pki.tls_files(pki_dir, "model-owner"),
            listen=f"127.0.0.1:{model_owner_port}",
            rendezvous_host="127.0.0.1",
            crypto_provider=f"127.0.0.1:{dealer_port}",
            threads=1,  # three parties share this machine's cores
        ),
        "crypto-provider": CryptoProviderConfig(
            tls=pki.tls_files(pki_dir, "crypto-provider"),
            listen=f"127.0.0.1:{dealer_port}",
            mpc_host="127.0.0.1",
            # the only model owner it deals for, and the only address it dials for it
            model_owners=(ModelOwnerEntry("model-owner", "127.0.0.1", (29500, 29599)),),
        ),
        "data-owner": DataOwnerConfig(
            tls=pki.tls_files(pki_dir, "data-owner"),
            server=f"127.0.0.1:{model_owner_port}",
            crypto_providers=("crypto-provider",),
            threads=1,
        ),
    }
    for party, config in configs.items():
        write_toml(config, out / f"{party}.toml")


def _write_images(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    batch = generate(
        SynthConfig(sites=1, patients_per_site=count, images_per_patient=1, size=size, seed=99)
    )
    paths = []
    for index, pixels in enumerate(batch.images[:count]):
        path = folder / f"image-{index}.png"
        Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _wait_until_serving(config: DataOwnerConfig, children: list[Any], logs: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        for name, child in zip(("crypto-provider", "model-owner"), children, strict=True):
            if child.poll() is not None:
                log = logs / f"{name}.log"
                raise InferenceDemoFailed(
                    f"the {name} exited (code {child.returncode}); the end of {log}:\n" + tail(log)
                )
        try:
            describe_model(config)
            return
        except PredictionFailed:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _write_predictions(path: Path, images: list[Path], result: InferenceDemoResult) -> None:
    rows = [
        {
            "image": image.name,
            "encrypted": dict(zip(result.label_names, map(float, encrypted), strict=True)),
            "plaintext": dict(zip(result.label_names, map(float, plaintext), strict=True)),
        }
        for image, encrypted, plaintext in zip(
            images, result.encrypted, result.plaintext, strict=True
        )
    ]
    summary = {"max_difference": result.max_difference, "seconds": result.seconds}
    path.write_text(json.dumps({"images": rows, **summary}, indent=2) + "\n")
