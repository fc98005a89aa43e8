"""A TCP relay that adds a fixed latency in each direction: a stand-in for ``tc netem``.

    python delay_relay.py LISTEN_HOST:PORT TARGET_HOST:PORT DELAY_MS

Every chunk read from one side is written to the other ``DELAY_MS`` after it arrived, in
order, so a round trip through the relay takes 2 × DELAY_MS longer, as over a long link.
The multi-host tests run it inside a host's network namespace because many kernels
(CI sandboxes among them) ship without the netem scheduler.
"""

from __future__ import annotations

import asyncio
import sys
import time


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not chunk:  # the end of the stream is delayed like the data before it
                break
            writer.write(chunk)
            await writer.drain()
        writer.close()

    delivery = asyncio.create_task(deliver())
    try:
        while chunk := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay, chunk))
    except ConnectionError:
        pass
    queue.put_nowait((time.monotonic() + delay, b""))
    await delivery


async def _serve(listen: str, target: str, delay: float) -> None:
    target_host, target_port = target.rsplit(":", 1)

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                target_host, int(target_port)
            )
        except OSError:  # the target is not up yet: refuse, as it would
            writer.close()
            return
        await asyncio.gather(
            _pipe(reader, upstream_writer, delay),
            _pipe(upstream_reader, writer, delay),
            return_exceptions=True,
        )

    host, port = listen.rsplit(":", 1)
    server = await asyncio.start_server(connect, host, int(port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], sys.argv[2], float(sys.argv[3]) / 1000))
