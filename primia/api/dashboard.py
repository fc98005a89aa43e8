"""The dashboard's front door (``primia dashboard``): a coordinator's status, or a
finished run's directory, in the browser; see :mod:`primia.dashboard`."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from primia.dashboard import LiveRun, allowed_hosts, make_app
from primia.errors import ConfigError
from primia.federated.run_view import RunView, read_run
from primia.pki import TLSFiles

DEFAULT_HOST = "127.0.0.1"
"""Localhost only: whoever reaches the page sees what the operator's certificate sees."""


def dashboard_app(
    *,
    coordinator: str | None = None,
    tls: TLSFiles | None = None,
    run_dir: Path | None = None,
    reports: Sequence[Path] = (),
    server_name: str = "coordinator",
    host: str = DEFAULT_HOST,
    allow_hosts: Sequence[str] = (),
) -> Any:
    """The dashboard's ASGI application, over a running coordinator (``coordinator`` and
    the operator's ``tls``) or a run directory (``run_dir``): exactly one of the two.
    ``host``: the address it will be served on; requests naming another host than it,
    ``localhost`` or one of ``allow_hosts`` (the names it is reached by when bound to
    another interface) are refused, against DNS rebinding."""
    if (coordinator is None) == (run_dir is None):
        raise ConfigError(
            "give the dashboard either --coordinator (with --ca/--cert/--key) or --run"
        )
    for folder in reports:
        if not folder.is_dir():
            raise ConfigError(f"report folder {folder} is not a directory; pass --reports DIR")
    fetch: Callable[[], RunView]
    if run_dir is not None:
        directory = run_dir
        fetch = lambda: read_run(directory)  # noqa: E731
    else:
        if tls is None:
            raise ConfigError("the dashboard needs the operator's --ca, --cert and --key")
        from primia.rpc.status import fetch_status

        address, files = str(coordinator), tls
        fetch = LiveRun(lambda: fetch_status(address, files, server_name=server_name, timeout=3.0))
    return make_app(fetch, list(reports), hosts=allowed_hosts(host, allow_hosts))


def serve_dashboard(app: Any, *, host: str = DEFAULT_HOST, port: int = 8765) -> None:
    """Serve ``app`` (:func:`dashboard_app`) with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError as error:
        raise ConfigError(
            "the dashboard needs its extra: pip install 'primia[dashboard]'"
        ) from error
    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextmanager
def running_dashboard(app: Any, *, host: str = DEFAULT_HOST) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of ``host`` in a background thread, for
    tests and benchmarks; yields its base URL and stops the server on exit."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="error"))
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError(f"the dashboard did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
