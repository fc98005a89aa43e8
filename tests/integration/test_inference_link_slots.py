"""An outsider on the network, with no certificate, fills an MPC listener's handshake
slots: the session's dialing peer keeps dialing until its join deadline, and gets in once
a slot is free.

Real TLS 1.3 links with the consortium's certificates on loopback.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from primia import pki
from primia.inference.links import (
    MAX_PENDING_HANDSHAKES,
    LinkError,
    LinkPeer,
    LinkPlan,
    Links,
    bind_listener,
    establish,
)


def test_an_outsider_holding_every_handshake_slot_delays_the_links_but_does_not_break_them(
    consortium_pki: Path,
) -> None:
    """The outsider opens MAX_PENDING_HANDSHAKES TCP connections and sends nothing: each
    holds a slot until its handshake times out. A peer dialing meanwhile was closed
    before its handshake and gave up at once, ending the session (an outsider could so
    break every session at a listener); now it dials again until its deadline."""
    listener = bind_listener("127.0.0.1", (0, 0))
    port = listener.getsockname()[1]
    listening = LinkPlan(
        "slots",
        0,
        (LinkPeer(1, "site0", ("node",)),),
        pki.tls_files(consortium_pki, "model-owner"),
        listen_host="127.0.0.1",
        join_timeout_s=60,
    )
    dialing = LinkPlan(
        "slots",
        1,
        (LinkPeer(0, "model-owner", ("inference",), "127.0.0.1", port),),
        pki.tls_files(consortium_pki, "site0"),
        join_timeout_s=60,
    )
    # Connected before the listener accepts anything: accepted first, they take every slot.
    outsider = [
        socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_PENDING_HANDSHAKES)
    ]
    results: dict[int, Links | Exception] = {}

    def run(rank: int, plan: LinkPlan, bound: socket.socket | None) -> None:
        try:
            results[rank] = establish(plan, bound)
        except LinkError as error:
            results[rank] = error

    threads = [
        threading.Thread(target=run, args=(0, listening, listener)),
        threading.Thread(target=run, args=(1, dialing, None)),
    ]
    for thread in threads:
        thread.start()
    # Without dialing again, the peer's first refusal ended its side within this second.
    threads[1].join(timeout=1.0)
    for connection in outsider:
        connection.close()
    for thread in threads:
        thread.join(timeout=60)

    assert all(isinstance(results.get(rank), Links) for rank in (0, 1)), results
    for links in results.values():
        assert isinstance(links, Links)
        links.close()
