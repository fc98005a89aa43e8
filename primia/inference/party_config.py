"""The three parties' configuration files, one per machine.

The model owner (``primia infer serve --config model-owner.toml``)::

    listen = "0.0.0.0:50061"                   # gRPC (mutual TLS): data owners ask here
    rendezvous_host = "10.8.0.1"               # this machine's address on the private network
    rendezvous_ports = [29500, 29599]          # one port per concurrent session
    crypto_provider = "10.8.0.3:50062"
    crypto_provider_name = "crypto-provider"   # the name in its certificate
    max_sessions = 2
    max_batch = 8
    session_timeout_s = 900

    [tls]
    ca = "pki/ca.pem"
    certificate = "pki/model-owner.pem"        # role inference
    key = "pki/model-owner.key"

    [limits]                                   # optional, as the coordinator's
    max_calls = 0                              # 0: 64
    max_calls_per_peer = 4
    first_message_s = 10.0

The crypto provider (``primia infer crypto-provider --config crypto-provider.toml``)::

    listen = "0.0.0.0:50062"
    max_sessions = 4

    [tls]  # its own certificate, role inference

The data owner (``primia infer predict --config data-owner.toml ...``)::

    server = "10.8.0.1:50061"
    server_name = "model-owner"                # the name in the model owner's certificate

    [tls]  # its certificate, role node or inference

Relative paths are taken from the file's folder. ``network_interface`` (any file) names
the interface gloo uses for the MPC links (e.g. ``"wg0"`` for a WireGuard VPN); empty, it
uses the interface of the host name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from primia.config import load_toml, rebase_paths
from primia.errors import ConfigError
from primia.limits import ServerLimits
from primia.pki import TLSFiles


@dataclass(frozen=True)
class ModelOwnerConfig:
    tls: TLSFiles
    listen: str = "0.0.0.0:50061"
    rendezvous_host: str = "127.0.0.1"
    """The address at which the data owner and the crypto provider reach this machine."""
    rendezvous_ports: tuple[int, ...] = (29500, 29599)
    """The first and last port of the range the sessions' rendezvous use."""
    crypto_provider: str = "127.0.0.1:50062"
    crypto_provider_name: str = "crypto-provider"
    allowed_data_owners: tuple[str, ...] = ()
    """Names (from their certificates) that may open sessions; empty: any of the consortium."""
    max_sessions: int = 2
    max_batch: int = 8
    session_timeout_s: float = 900.0
    threads: int = 0
    """Torch threads per session; 0: PyTorch's default (the machine's cores)."""
    network_interface: str = ""
    limits: ServerLimits = field(default_factory=ServerLimits)
    """What one certificate holder may cost the server (see docs/operator-guide.md)."""

    def __post_init__(self) -> None:
        _check_address("listen", self.listen)
        _check_address("crypto_provider", self.crypto_provider)
        if len(self.rendezvous_ports) != 2 or not (
            0 < self.rendezvous_ports[0] <= self.rendezvous_ports[1] < 65536
        ):
            raise ConfigError(
                f"rendezvous_ports must be [FIRST, LAST] with 0 < FIRST <= LAST < 65536, got "
                f"{list(self.rendezvous_ports)}"
            )
        _check_positive(
            max_sessions=self.max_sessions,
            max_batch=self.max_batch,
            session_timeout_s=self.session_timeout_s,
        )

    @property
    def ports(self) -> range:
        return range(self.rendezvous_ports[0], self.rendezvous_ports[1] + 1)


@dataclass(frozen=True)
class CryptoProviderConfig:
    tls: TLSFiles
    listen: str = "0.0.0.0:50062"
    max_sessions: int = 4
    session_timeout_s: float = 900.0
    """The longest a session may hold a dealer, whatever the model owner asks."""
    threads: int = 1
    """Torch threads per session; dealing is light."""
    network_interface: str = ""
    limits: ServerLimits = field(default_factory=ServerLimits)

    def __post_init__(self) -> None:
        _check_address("listen", self.listen)
        _check_positive(max_sessions=self.max_sessions, session_timeout_s=self.session_timeout_s)


@dataclass(frozen=True)
class DataOwnerConfig:
    tls: TLSFiles
    server: str = "127.0.0.1:50061"
    server_name: str = "model-owner"
    threads: int = 0
    network_interface: str = ""

    def __post_init__(self) -> None:
        _check_address("server", self.server)


def load_model_owner_config(path: Path) -> ModelOwnerConfig:
    return rebase_paths(load_toml(ModelOwnerConfig, path), path.parent)


def load_crypto_provider_config(path: Path) -> CryptoProviderConfig:
    return rebase_paths(load_toml(CryptoProviderConfig, path), path.parent)


def load_data_owner_config(path: Path) -> DataOwnerConfig:
    return rebase_paths(load_toml(DataOwnerConfig, path), path.parent)


def _check_address(key: str, value: str) -> None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{key} {value!r} must be HOST:PORT")


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
