"""How much a party of an encrypted inference session reads ahead from a peer
(:class:`primia.inference.links._Inbox`), over a real socket pair."""

from __future__ import annotations

import socket
import threading

import pytest
import torch

from primia.inference import links, wire


def test_a_peer_cannot_make_a_party_read_ahead_more_than_its_budget() -> None:
    """A peer streaming frames nobody asked for: each is within the frame limit, but
    read ahead without a bound they filled the party's memory. Reading pauses at the
    budget (TCP holds the peer) and goes on as frames are taken."""
    ours, theirs = socket.socketpair()
    inbox = links._Inbox(1, ours, max_bytes=4096)
    frame = torch.arange(512, dtype=torch.int64)  # 4096 bytes, the most a frame may hold
    data = wire.tensor_header(frame) + bytes(wire.tensor_payload(frame))

    def stream() -> None:
        try:
            while True:
                theirs.sendall(data)
        except OSError:  # the test shut the link
            pass

    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    try:
        assert inbox.paused.wait(timeout=60)
        assert 0 < inbox.unread <= inbox.budget == 2 * 4096
        kind, value = inbox.get()
        assert kind == wire.TENSOR and torch.equal(value, frame)
        assert inbox.paused.wait(timeout=60)
        assert inbox.unread <= inbox.budget
    finally:
        theirs.shutdown(socket.SHUT_RDWR)
        sender.join(timeout=60)
        with pytest.raises(links.LinkError, match="broke"):  # what was sent, then the end
            while True:
                inbox.get()
        theirs.close()
        ours.close()
