"""A model owner that steers the crypto provider (three real CrypTen processes on loopback,
mutual-TLS links): it asks the dealer for a method of CrypTen's TTP server that is not a
dealing function, ``_get_additive_PRSS(size, remove_rank=True)``, whose answer is the data
owner's next share of a Beaver triple; the first multiplication then opens the images to
it. The dealer now refuses the request and ends the session
(:mod:`primia.inference.dealing`); without that check the images come back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors

from primia.inference import acceleration, communicator, dealing, parties
from primia.inference.encrypted import EncryptedModel
from primia.inference.local import InferenceFailed, run_local
from primia.models.checkpoint import ModelSpec

pytestmark = pytest.mark.slow

SPEC = ModelSpec("cnn", num_outputs=2, width=4, image_size=32)


def curious_model_owner(
    meeting: parties.Meeting, spec: ModelSpec, weights: bytes, shape: tuple[int, ...], **kw: Any
) -> dict[str, Any]:
    """The model owner's party, deviating once: before the first multiplication it asks
    the dealer for the data owner's next draw a₁; from the multiplication's a₀ and the
    opened ε = x − a it computes x = ε + a₀ + a₁, the images, and returns them."""
    model = spec.build()
    model.load_state_dict(load_safetensors(weights))
    with parties.join(meeting, parties.MODEL_OWNER, kw["progress"]) as session:
        crypten = session.crypten
        from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor
        from crypten.mpc.provider.ttp_provider import TTPClient

        seen: dict[str, torch.Tensor] = {}
        deal, reveal = acceleration.deal, ArithmeticSharedTensor.reveal_batch

        def first_deal(request: tuple[Any, ...], *args: Any, **kwargs: Any) -> Any:
            drawn, answer = deal(request, *args, **kwargs)
            if request[0] == "additive":
                seen.setdefault("a0", drawn[0].clone())
            return drawn, answer

        def first_reveal(tensors: Any) -> Any:
            opened = reveal(tensors)
            seen.setdefault("epsilon", opened[0].clone())
            return opened

        acceleration.deal = first_deal  # this process's multiplications draw through it
        ArithmeticSharedTensor.reveal_batch = staticmethod(first_reveal)
        encrypted = EncryptedModel(model, src=parties.MODEL_OWNER, crypten=crypten)
        images = crypten.cryptensor(torch.zeros(shape), src=parties.DATA_OWNER)
        comm, client = crypten.comm.get(), TTPClient.get()
        dealer = comm.get_ttp_rank()
        request = {
            "function": "_get_additive_PRSS",
            "device": "cpu",
            "args": (torch.Size(shape),),
            "kwargs": {"remove_rank": True},
        }
        comm.send_obj(request, dealer, client.ttp_group)
        a1 = torch.empty(comm.recv_obj(dealer, client.ttp_group), dtype=torch.long)
        comm.broadcast(a1, dealer, client.comm_group)
        parties.open_to(encrypted(images), parties.DATA_OWNER)
        recovered = (seen["epsilon"] + seen["a0"] + a1).double() / 2**16
        return {"images": recovered.float().numpy()}


def out_of_step_model_owner(
    meeting: parties.Meeting, spec: ModelSpec, weights: bytes, shape: tuple[int, ...], **kw: Any
) -> parties.PartyStats:
    """The model owner's party, asking the dealer for one dealing function the data owner
    does not ask for (a B2A before the first layer): the first step of moving the dealer's
    copy of the data owner's generator out of step (see primia.inference.dealing). Then it
    runs the model as usual, so that a dealer that answered would see the session complete
    (with wrong logits) instead of fail."""
    model = spec.build()
    model.load_state_dict(load_safetensors(weights))
    with parties.join(meeting, parties.MODEL_OWNER, kw["progress"]) as session:
        crypten = session.crypten
        from crypten.mpc.provider.ttp_provider import TTPClient

        comm, client = crypten.comm.get(), TTPClient.get()
        dealer = comm.get_ttp_rank()
        request = {"function": "B2A", "device": "cpu", "args": (torch.Size(shape),), "kwargs": {}}
        comm.send_obj(request, dealer, client.ttp_group)
        answer = torch.empty(comm.recv_obj(dealer, client.ttp_group), dtype=torch.long)
        comm.broadcast(answer, dealer, client.comm_group)
        encrypted = EncryptedModel(model, src=parties.MODEL_OWNER, crypten=crypten)
        images = crypten.cryptensor(torch.zeros(shape), src=parties.DATA_OWNER)
        parties.open_to(encrypted(images), parties.DATA_OWNER)
        return session.stats()


@pytest.mark.parametrize("model_owner", [curious_model_owner, out_of_step_model_owner])
def test_a_model_owner_cannot_have_the_dealer_hand_it_the_data_owners_shares(
    model_owner: Any,
) -> None:
    torch.manual_seed(0)
    model = SPEC.build().eval()
    images = torch.rand(2, 1, 32, 32)
    with pytest.raises(InferenceFailed):
        run_local(SPEC, model.state_dict(), images, timeout_s=240, model_owner=model_owner)
    request = {"function": "_get_additive_PRSS", "device": "cpu", "args": [[2]], "kwargs": {}}
    assert "not one of additive" in (dealing.request_problem(request) or "")


def unchecked_crypto_provider(
    meeting: parties.Meeting, progress: parties.Progress = parties.no_progress
) -> parties.PartyStats:
    """The crypto provider as CrypTen's own: it serves any request of party 0, whatever
    the data owner asked (the data owner's copies of the requests are left unread)."""
    install = communicator.install
    dealing.request_problem = lambda request: None
    communicator.install = lambda links, **kw: install(links, **kw | {"mirrored_requests": False})
    return parties.crypto_provider(meeting, progress)


def test_without_the_check_the_model_owner_reads_the_images() -> None:
    """The same model owner against a dealer that serves any request."""
    torch.manual_seed(0)
    model = SPEC.build().eval()
    images = torch.rand(2, 1, 32, 32)
    run = run_local(
        SPEC,
        model.state_dict(),
        images,
        timeout_s=240,
        model_owner=curious_model_owner,
        crypto_provider=unchecked_crypto_provider,
    )
    stolen = next(s for s in run.parties if isinstance(s, dict))["images"]
    np.testing.assert_allclose(stolen, images.numpy(), atol=2**-15)
