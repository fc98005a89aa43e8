"""The three parties' configuration files, one per machine.

The model owner (``primia infer serve --config model-owner.toml``)::

    listen = "0.0.0.0:50061"                   # gRPC (mutual TLS): data owners ask here
    rendezvous_host = "10.8.0.1"               # the address the MPC links listen on (one)
    rendezvous_ports = [29500, 29599]          # one port per concurrent session
    crypto_provider = "10.8.0.3:50062"
    crypto_provider_name = "crypto-provider"   # the name in its certificate
    max_sessions = 2
    max_sessions_per_caller = 1                # open sessions one data owner may hold
    max_batch = 8
    session_timeout_s = 900
    join_timeout_s = 30                        # a session not joined by then is ended
    pool_size = 1                              # party processes kept started (warm)
    plugins = ["mynet=my_package.models:build_mynet"]   # a plug-in model, if it serves one
    allow_plugins = true                       # loading a plug-in runs its code here

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
    mpc_host = "10.8.0.3"                      # the address its MPC links listen on
    mpc_ports = [29600, 29699]
    max_sessions = 4
    max_sessions_per_caller = 2

    [[model_owners]]                           # the only model owners it deals for
    name = "model-owner"                       # the name in its certificate
    host = "10.8.0.1"                          # the only address it dials for them
    ports = [29500, 29599]                     # their rendezvous_ports

    [tls]  # its own certificate, role inference

The data owner (``primia infer predict --config data-owner.toml ...``)::

    server = "10.8.0.1:50061"
    server_name = "model-owner"                # the name in the model owner's certificate
    crypto_providers = ["crypto-provider"]     # names it accepts; empty: any `inference`
    plugins = ["mynet=my_package.models:build_mynet"]   # the served plug-in, if any
    allow_plugins = true

    [tls]  # its certificate, role node or inference

The crypto provider deals randomness and never builds the model: it takes no plug-in.
Relative paths are taken from the file's folder. ``network_interface`` (any file) is read
for older files and only matters to the unauthenticated gloo path benchmarks compare with:
the MPC links listen on ``rendezvous_host`` / ``mpc_host`` and are mutual TLS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from primia.config import load_toml, rebase_paths
from primia.errors import ConfigError
from primia.limits import ServerLimits
from primia.models.plugins import load_allowed_plugins
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
    max_sessions_per_caller: int = 1
    """Open sessions one data owner (certificate name) may hold at once."""
    max_batch: int = 8
    session_timeout_s: float = 900.0
    join_timeout_s: float = 30.0
    """A session whose parties' links are not all up this long after it opened is ended."""
    pool_size: int = 1
    """Party processes kept started and idle, so a session starts computing at once."""
    threads: int = 0
    """Torch threads per session; 0: PyTorch's default (the machine's cores)."""
    network_interface: str = ""
    limits: ServerLimits = field(default_factory=ServerLimits)
    """What one certificate holder may cost the server (see docs/operator-guide.md)."""
    plugins: tuple[str, ...] = ()
    """Model plug-ins to load (``NAME=package.module:factory`` or an entry point's ``NAME``;
    :mod:`primia.models.plugins`); its CrypTen processes load them too. Needs
    ``allow_plugins``."""
    allow_plugins: bool = False
    """Load ``plugins``: a plug-in's module runs its code on this machine, so off by default."""

    def __post_init__(self) -> None:
        load_allowed_plugins(self.plugins, allowed=self.allow_plugins, switch="allow_plugins")
        _check_address("listen", self.listen)
        _check_address("crypto_provider", self.crypto_provider)
        _check_ports("rendezvous_ports", self.rendezvous_ports)
        _check_listen_host("rendezvous_host", self.rendezvous_host)
        _check_positive(
            max_sessions=self.max_sessions,
            max_sessions_per_caller=self.max_sessions_per_caller,
            max_batch=self.max_batch,
            session_timeout_s=self.session_timeout_s,
            join_timeout_s=self.join_timeout_s,
        )
        _check_not_negative(pool_size=self.pool_size)

    @property
    def ports(self) -> tuple[int, int]:
        return self.rendezvous_ports[0], self.rendezvous_ports[1]


@dataclass(frozen=True)
class ModelOwnerEntry:
    """A model owner the crypto provider deals for, and where it dials that model owner."""

    name: str
    """The name in its certificate."""
    host: str
    """The address of its MPC links (its ``rendezvous_host``)."""
    ports: tuple[int, ...] = (29500, 29599)
    """Its ``rendezvous_ports``: a Deal naming a port outside is refused."""

    def __post_init__(self) -> None:
        if not self.name or not self.host:
            raise ConfigError("every [[model_owners]] entry needs a name and a host")
        _check_ports(f"model_owners {self.name!r} ports", self.ports)


@dataclass(frozen=True)
class CryptoProviderConfig:
    tls: TLSFiles
    listen: str = "0.0.0.0:50062"
    mpc_host: str = "127.0.0.1"
    """The address its MPC links listen on (for data owners) and that it tells them."""
    mpc_ports: tuple[int, ...] = (29600, 29699)
    model_owners: tuple[ModelOwnerEntry, ...] = ()
    """The only model owners it deals for; empty: it deals for none."""
    max_sessions: int = 4
    max_sessions_per_caller: int = 2
    """Sessions one model owner may have it deal for at once."""
    session_timeout_s: float = 900.0
    """The longest a session may hold a dealer, whatever the model owner asks."""
    join_timeout_s: float = 30.0
    """A session whose links are not all up this long after the Deal is ended."""
    pool_size: int = 1
    threads: int = 1
    """Torch threads per session; dealing is light."""
    network_interface: str = ""
    limits: ServerLimits = field(default_factory=ServerLimits)

    def __post_init__(self) -> None:
        _check_address("listen", self.listen)
        _check_ports("mpc_ports", self.mpc_ports)
        _check_listen_host("mpc_host", self.mpc_host)
        _check_positive(
            max_sessions=self.max_sessions,
            max_sessions_per_caller=self.max_sessions_per_caller,
            session_timeout_s=self.session_timeout_s,
            join_timeout_s=self.join_timeout_s,
        )
        _check_not_negative(pool_size=self.pool_size)
        names = [entry.name for entry in self.model_owners]
        if len(set(names)) != len(names):
            raise ConfigError("model_owners names a model owner twice; keep one entry each")


@dataclass(frozen=True)
class DataOwnerConfig:
    tls: TLSFiles
    server: str = "127.0.0.1:50061"
    server_name: str = "model-owner"
    crypto_providers: tuple[str, ...] = ()
    """Crypto providers (certificate names) it accepts in a session; empty: any with role
    ``inference`` that the model owner names."""
    threads: int = 0
    network_interface: str = ""
    plugins: tuple[str, ...] = ()
    """Model plug-ins to load (``NAME=package.module:factory`` or an entry point's ``NAME``;
    :mod:`primia.models.plugins`); its CrypTen processes load them too. Needs
    ``allow_plugins``."""
    allow_plugins: bool = False
    """Load ``plugins``: a plug-in's module runs its code on this machine, so off by default."""

    def __post_init__(self) -> None:
        load_allowed_plugins(self.plugins, allowed=self.allow_plugins, switch="allow_plugins")
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


def _check_ports(key: str, ports: tuple[int, ...]) -> None:
    if len(ports) != 2 or not (0 < ports[0] <= ports[1] < 65536):
        raise ConfigError(
            f"{key} must be [FIRST, LAST] with 0 < FIRST <= LAST < 65536, got {list(ports)}"
        )


def _check_listen_host(key: str, host: str) -> None:
    if not host or host in ("0.0.0.0", "::"):
        raise ConfigError(
            f"{key} must be one address of this machine (the MPC links listen only there), "
            f"not {host!r}"
        )


def _check_not_negative(**values: int) -> None:
    for key, value in values.items():
        if value < 0:
            raise ConfigError(f"{key} must be 0 or more, got {value}")


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
