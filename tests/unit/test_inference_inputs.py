"""The data owner's input checks and the inference configuration: refused with a message
that names the problem, before any session or MPC starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from primia.errors import ConfigError, DataError
from primia.inference.inputs import check_images, check_input_shape, load_images, probabilities
from primia.inference.links import bind_listener
from primia.inference.party_config import ModelOwnerConfig
from primia.launch import free_port
from primia.models.checkpoint import ModelSpec
from primia.pki import TLSFiles

SPEC = ModelSpec("cnn", num_outputs=2, image_size=32)
TLS = TLSFiles(Path("ca.pem"), Path("x.pem"), Path("x.key"))


def _png(path: Path, size: tuple[int, int], mode: str = "L") -> Path:
    channels = {"L": (), "RGB": (3,)}[mode]
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], *channels))
    Image.fromarray(pixels.astype(np.uint8), mode=mode).save(path)
    return path


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 1, 32), "must have shape"),
        ((0, 1, 32, 32), "1 to 4 images, got 0"),
        ((5, 1, 32, 32), "1 to 4 images, got 5"),
        ((1, 3, 32, 32), "1-channel images, got 3"),
        ((1, 1, 64, 32), "32×32 images, got 64×32"),
    ],
)
def test_wrong_shapes_are_refused_with_the_fix(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_input_shape(shape, SPEC, max_batch=4)


def test_a_right_shape_passes() -> None:
    check_input_shape((4, 1, 32, 32), SPEC, max_batch=4)


def test_values_outside_the_unit_range_or_not_finite_are_refused() -> None:
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        check_images(torch.full((1, 1, 32, 32), 2.0), SPEC, 4)
    images = torch.zeros(1, 1, 32, 32)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        check_images(images, SPEC, 4)


def test_load_images_reads_grey_files_of_the_right_size(tmp_path: Path) -> None:
    path = _png(tmp_path / "a.png", (32, 32))
    images = load_images([path, path], SPEC)
    assert images.shape == (2, 1, 32, 32)
    expected = torch.from_numpy(np.array(Image.open(path))).float() / 255
    assert torch.allclose(images[0, 0], expected)


def test_load_images_refuses_what_the_model_cannot_take(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_images([tmp_path / "missing.png"], SPEC)
    with pytest.raises(DataError, match=r"is 48×40; the model takes 32×32.*--fit"):
        load_images([_png(tmp_path / "big.png", (48, 40))], SPEC)
    with pytest.raises(DataError, match=r"colour image.*--fit"):
        load_images([_png(tmp_path / "rgb.png", (32, 32), "RGB")], SPEC)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="not an image Pillow can read"):
        load_images([broken], SPEC)
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(DataError, match="not a PNG, JPEG or TIFF"):
        load_images([text], SPEC)


def test_fit_converts_and_resizes(tmp_path: Path) -> None:
    images = load_images([_png(tmp_path / "rgb.png", (48, 40), "RGB")], SPEC, fit=True)
    assert images.shape == (1, 1, 32, 32)
    assert images.min() >= 0 and images.max() <= 1


def test_probabilities_follow_the_task() -> None:
    logits = torch.tensor([[0.0, 2.0]])
    assert torch.allclose(probabilities(logits, "multilabel"), logits.sigmoid())
    assert torch.allclose(probabilities(logits, "multiclass").sum(), torch.tensor(1.0))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rendezvous_ports": (29600, 29500)}, "rendezvous_ports"),
        ({"rendezvous_ports": (29500,)}, "rendezvous_ports"),
        ({"listen": "50061"}, "HOST:PORT"),
        ({"max_batch": 0}, "max_batch must be positive"),
        ({"session_timeout_s": -1.0}, "session_timeout_s must be positive"),
    ],
)
def test_model_owner_config_is_checked(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelOwnerConfig(tls=TLS, **values)  # type: ignore[arg-type]


def test_the_port_range_is_inclusive() -> None:
    assert ModelOwnerConfig(tls=TLS, rendezvous_ports=(5, 7)).ports == (5, 7)
    port = free_port()
    listener = bind_listener("127.0.0.1", (port, port))  # the last port counts too
    try:
        assert listener.getsockname()[1] == port
    finally:
        listener.close()
