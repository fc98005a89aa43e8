"""CrypTen's communicator over primia's authenticated MPC links (:mod:`primia.inference.links`).

CrypTen talks to its peers through one interface (``crypten.communicator.Communicator``:
send/recv, their non-blocking forms, broadcast, (all-)reduce, (all-)gather, scatter,
barrier, and ``*_obj`` for small objects). :func:`install` puts
:class:`SecureCommunicator` where CrypTen looks for its ``DistributedCommunicator``, so
CrypTen's arithmetic runs unchanged while every byte travels over the session's mutual-TLS
links; torch.distributed is never initialised (no rendezvous, no key-value store, no gloo
sockets). The TTP provider calls ``torch.distributed`` itself for three things (the
provider's seeds: isend, irecv; a barrier): :func:`install` gives its module a stand-in
that routes them over the same links.

Collectives are built from point-to-point frames between the group's members (a session
has two computing parties and the dealer, so no tree is needed): every member sends its
tensor to the root (or to everyone) and combines what it receives in rank order. Objects
go as typed values (:mod:`primia.inference.wire`), never pickles. CrypTen's communication
statistics (rounds, bytes) are kept by its own ``_logging`` decorator, as for gloo.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import torch
from torch.distributed import ReduceOp

from primia.inference import dealing
from primia.inference.links import LinkError, Links

Group = tuple[int, ...]


class _Sent:
    """The request ``isend`` returns: done once the frame has left."""

    def __init__(self, done: threading.Event) -> None:
        self._done = done

    def wait(self) -> None:
        self._done.wait()

    def is_completed(self) -> bool:
        return self._done.is_set()


class _Receive:
    """The request ``irecv`` returns: fills its tensor, in the order requests were made."""

    def __init__(self, links: Links, src: int, tensor: torch.Tensor, pending: deque[Any]) -> None:
        self._links = links
        self._src = src
        self._tensor = tensor
        self._pending = pending
        self._done = False
        pending.append(self)

    def wait(self) -> None:
        while not self._done:
            first = self._pending.popleft()
            first._complete()

    def is_completed(self) -> bool:
        return self._done

    def _complete(self) -> None:
        self._tensor.copy_(self._links.recv_tensor(self._src, like=self._tensor))
        self._done = True


def _combine(tensors: list[torch.Tensor], op: Any) -> torch.Tensor:
    result = tensors[0].clone()
    for tensor in tensors[1:]:
        if op is None or op == ReduceOp.SUM:
            result += tensor
        elif op == ReduceOp.BXOR:
            result ^= tensor
        else:
            raise LinkError(f"reduce operation {op} is not supported on primia's MPC links")
    return result


def _communicator_class() -> type:
    """SecureCommunicator, built on CrypTen's base class once CrypTen is importable."""
    from crypten.communicator.communicator import Communicator, _logging

    class SecureCommunicator(Communicator):
        BYTES_PER_ELEMENT = 8
        instance: SecureCommunicator | None = None
        pending_links: Links | None = None
        pending_world_size = 0
        mirrored_requests = True
        unanswered: Any = None
        """The dealer's last request from party 0 whose copies it has not yet compared."""

        def __init__(self, links: Links, world_size: int) -> None:
            self.links = links
            self.rank = links.plan.rank
            self.world_size = world_size
            self.main_group: Group = tuple(range(world_size))
            self.ttp_group: Group = tuple(range(world_size + 1))
            self.ttp_comm_group: Group = (0, world_size)
            self.ttp_initialized = True
            self._name = f"rank{self.rank}"
            self._pending: dict[int, deque[_Receive]] = {}
            self.reset_communication_stats()

        @classmethod
        def is_initialized(cls) -> bool:
            return cls.instance is not None

        @classmethod
        def get(cls) -> SecureCommunicator | None:
            return cls.instance

        @classmethod
        def initialize(cls, rank: int, world_size: int, init_ttp: bool = False) -> None:
            links = cls.pending_links
            if links is None:
                raise LinkError("CrypTen started without the session's links (call install)")
            if not init_ttp:
                raise LinkError("primia runs CrypTen only with the TTP provider")
            cls.instance = cls(links, world_size=cls.pending_world_size)
            cls.pending_links = None

        @classmethod
        def shutdown(cls) -> None:
            instance = cls.instance
            if instance is None:
                return
            if instance.rank == 0:
                instance.links.send_value(instance.get_ttp_rank(), "terminate")
            instance.links.close()
            cls.instance = None

        # point to point
        @_logging
        def send(self, tensor: torch.Tensor, dst: int) -> None:
            self.links.send_tensor(dst, tensor)

        @_logging
        def recv(self, tensor: torch.Tensor, src: int | None = None) -> torch.Tensor:
            return self._receive(tensor, self._source(src))

        @_logging
        def isend(self, tensor: torch.Tensor, dst: int) -> _Sent:
            return self._isend(tensor, dst)

        @_logging
        def irecv(self, tensor: torch.Tensor, src: int | None = None) -> _Receive:
            return self._irecv(tensor, self._source(src))

        # collectives
        @_logging
        def scatter(
            self, scatter_list: list[torch.Tensor], src: int, size: Any = None, device: Any = None
        ) -> torch.Tensor:
            if src == self.rank:
                for rank in self._others(self.main_group):
                    self.links.send_tensor(rank, scatter_list[rank])
                return scatter_list[self.rank]
            if size is None:
                size = scatter_list[self.rank].size()
            return self.links.recv_tensor(src, like=torch.empty(size, dtype=torch.long))

        @_logging
        def reduce(
            self, input: Any, dst: int, op: Any = ReduceOp.SUM, batched: bool = False
        ) -> Any:
            tensors = input if batched else [input]
            if dst != self.rank:
                for tensor in tensors:
                    self.links.send_tensor(dst, tensor)
                return None
            result = [self._gather_one(tensor, op) for tensor in tensors]
            return result if batched else result[0]

        @_logging
        def all_reduce(self, input: Any, op: Any = ReduceOp.SUM, batched: bool = False) -> Any:
            tensors = input if batched else [input]
            for tensor in tensors:
                for rank in self._others(self.main_group):
                    self.links.send_tensor(rank, tensor)
            result = [self._gather_one(tensor, op) for tensor in tensors]
            return result if batched else result[0]

        @_logging
        def gather(self, tensor: torch.Tensor, dst: int) -> list[Any]:
            if dst != self.rank:
                self.links.send_tensor(dst, tensor)
                return [None]
            return self._collect(tensor)

        @_logging
        def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
            for rank in self._others(self.main_group):
                self.links.send_tensor(rank, tensor)
            return self._collect(tensor)

        @_logging
        def broadcast(
            self, input: Any, src: int, group: Group | None = None, batched: bool = False
        ) -> Any:
            members = self.main_group if group is None else group
            tensors = input if batched else [input]
            if src == self.rank:
                for tensor in tensors:
                    for rank in self._others(members):
                        self.links.send_tensor(rank, tensor)
            else:
                for tensor in tensors:
                    tensor.copy_(self.links.recv_tensor(src, like=tensor))
            return input

        @_logging
        def barrier(self) -> None:
            self._barrier(self.main_group)

        # objects, as typed values
        @_logging
        def send_obj(self, obj: Any, dst: int, group: Group | None = None) -> None:
            if self.unanswered is not None and dst == 0:
                self._check_mirrors(self.unanswered)
            self.links.send_value(dst, obj)

        @_logging
        def recv_obj(self, src: int, group: Group | None = None) -> Any:
            value = self.links.recv_value(src)
            # The dealer serves party 0's requests: only the dealing functions (checked
            # before it computes), and only what every other party asked for too (checked
            # before its answer leaves: it computes while the others catch up, and a
            # refused request ends the session with nothing sent; primia.inference.dealing
            # says why both checks are needed).
            if self.rank == self.get_ttp_rank() and src == 0:
                if problem := dealing.request_problem(value):
                    self._refuse(problem)
                if self.mirrored_requests and value != "terminate":
                    self.unanswered = value
            return value

        def _check_mirrors(self, request: Any) -> None:
            self.unanswered = None
            others = [self.links.recv_value(rank) for rank in range(1, self.world_size)]
            if problem := dealing.mirror_problem(request, others):
                self._refuse(problem)

        def _refuse(self, problem: str) -> None:
            raise LinkError(
                f"session {self.links.plan.session_id}: the model owner asked the "
                f"crypto provider for {problem}; the dealer ended the session"
            )

        @_logging
        def broadcast_obj(self, obj: Any, src: int, group: Group | None = None) -> Any:
            members = self.main_group if group is None else group
            if src == self.rank:
                if obj is None:
                    raise LinkError("broadcast_obj: the source must provide an object")
                for rank in self._others(members):
                    self.links.send_value(rank, obj)
                return obj
            return self.links.recv_value(src)

        def get_world_size(self) -> int:
            return self.world_size

        def get_rank(self) -> int:
            return self.rank

        def get_ttp_rank(self) -> int:
            return self.world_size

        def set_name(self, name: str) -> None:
            self._name = name

        def get_name(self) -> str:
            return self._name

        def get_distributed_backend(self) -> str:
            return "primia-tls"

        # helpers (not counted: the calls above count their own traffic)
        def _isend(self, tensor: torch.Tensor, dst: int) -> _Sent:
            return _Sent(self.links.send_tensor(dst, tensor))

        def _irecv(self, tensor: torch.Tensor, src: int) -> _Receive:
            return _Receive(self.links, src, tensor, self._pending.setdefault(src, deque()))

        def _receive(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
            result = tensor.clone()
            self._irecv(result, src).wait()
            return result

        def _barrier(self, members: Group) -> None:
            for rank in self._others(members):
                self.links.send_value(rank, None)
            for rank in self._others(members):
                if self.links.recv_value(rank) is not None:
                    raise LinkError(f"rank {rank} sent something else at a barrier")

        def _source(self, src: int | None) -> int:
            if src is None:
                raise LinkError("receiving from any party is not supported; name the source")
            return src

        def _others(self, members: Group) -> list[int]:
            return [rank for rank in members if rank != self.rank]

        def _gather_one(self, tensor: torch.Tensor, op: Any) -> torch.Tensor:
            return _combine(self._collect(tensor), op)

        def _collect(self, tensor: torch.Tensor) -> list[torch.Tensor]:
            """Own tensor and one from each other computing party, in rank order."""
            return [
                tensor if rank == self.rank else self.links.recv_tensor(rank, like=tensor)
                for rank in self.main_group
            ]

    return SecureCommunicator


class _TorchDistributedStandIn:
    """What CrypTen's TTP provider module sees as ``torch.distributed``: the three calls it
    makes (seeds between the dealer and each party, a barrier) over the session's links."""

    def __init__(self, communicator_class: Any) -> None:
        self._class = communicator_class

    def isend(self, tensor: torch.Tensor, dst: int, group: Group | None = None) -> _Sent:
        return self._class.instance._isend(tensor, dst)

    def irecv(self, tensor: torch.Tensor, src: int, group: Group | None = None) -> _Receive:
        return self._class.instance._irecv(tensor, src)

    def barrier(self, group: Group | None = None) -> None:
        instance = self._class.instance
        instance._barrier(instance.ttp_group if group is None else group)


def install(links: Links, *, world_size: int, mirrored_requests: bool = True) -> None:
    """Make ``crypten.init()`` (in this process, for this one session) communicate over
    ``links`` among ``world_size`` computing parties and the dealer. A process runs one
    session only, so replacing CrypTen's globals is safe here.

    ``mirrored_requests``: every computing party sends the dealer each request
    (:mod:`primia.inference.acceleration` does), and the dealer serves party 0's only when
    the others sent the same (:mod:`primia.inference.dealing`); False for plain CrypTen,
    whose other parties send none."""
    import crypten.communicator as communicator_module
    import crypten.mpc.provider.ttp_provider as ttp_provider

    cls: Any = _communicator_class()
    cls.pending_links = links
    cls.pending_world_size = world_size
    cls.mirrored_requests = mirrored_requests
    communicator_module.DistributedCommunicator = cls
    ttp_provider.dist = _TorchDistributedStandIn(cls)
