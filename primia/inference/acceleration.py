"""Faster, exact forms of four of CrypTen's inner steps, for a party's process.

Profiling a ResNet-18 session at 224 px (``benchmarks/bench_encrypted_links.py``, one
thread per party) put a third of every party's CPU time into ``torch.randint`` (the
shares of Beaver triples, of binary triples and of the random masks: several GB of
random ring elements per session), and the crypto provider's dealing on the critical path
of every multiplication and comparison: the model owner waits while it generates. What
:func:`install` changes, and why the first three leave CrypTen's arithmetic (every share,
every opened value and every result, in the ring Z/2^64 with 16 fractional bits) as it
was, and the fourth every result:

1. **Random ring elements from AES-128-CTR** (:func:`ring_random`), keyed with 128 bits
   drawn from the same ``torch.Generator`` CrypTen would have drawn the elements from,
   hashed with that generator's whole seed. Every holder of a generator (a party and the
   dealer hold copies of the party's generator; neighbours hold the pairwise ones) draws
   the same key and so the same elements, so every pseudo-random sharing is as
   consistent as before; the elements are uniform over the ring (a k-bit element is the
   keystream's low k bits). AES-CTR runs at about 4× the speed of ``torch.randint`` on
   64-bit ranges here, and unlike the Mersenne Twister behind ``torch.randint`` it is a
   cryptographic generator: its outputs do not reveal its state. The secrecy rests on
   the generators' 64-bit seeds, from ``os.urandom`` (CrypTen's for the parties' own,
   :func:`dealer_seeds` for the dealer's). torch starts its Mersenne Twister from a
   seed's low 32 bits only, hence the hash; and CrypTen's dealer drew its seeds from
   torch's default generator, hence ours.
2. **The dealer's requests go out first.** Party 0 asks the dealer for its share of c
   (``c = a·b``, a square, a binary triple, wraps, a random bit), then draws its own
   shares of a and b while the dealer computes, instead of before asking. Each generator
   is drawn from in the same order as before, so every share is the same. The other
   computing party sends the dealer the same request (and reads no answer): the dealer
   serves party 0's only when they agree (:mod:`primia.inference.dealing`). Party 0
   reads the answer only when it needs it: a multiplication, square or AND needs c (a
   bit conversion the arithmetic r) only after its opening and the party's own products,
   so the dealer's computation (as large as one of the party's products) and its wait
   for the data owner's copy of the request overlap the opening instead of preceding
   it. The answers are the same values, read from the same link in the order asked
   (party 0 reads each before its next request).
3. **No product computed only for its shape, and one fewer product per multiplication.**
   A party other than 0 computed ``op(a, b)`` in full to learn the size of its share of
   c; the size now comes from the op's shape formula (:func:`product_size`). Beaver's
   ``z = c + ε·b + a·δ + ε·δ`` (ε = x − a and δ = y − b opened) is computed as
   ``c + ε·b + (a + ε)·δ`` by party 0 and ``c + ε·b + a·δ`` by the others: ``op`` is
   bilinear over Z/2^64 (an integer convolution, matrix or elementwise product, with
   int64 arithmetic wrapping modulo 2^64), so a·δ + ε·δ = (a + ε)·δ exactly, and the
   public term ε·δ is still added once, by party 0, as CrypTen adds public values.
4. **Comparisons with zero compute only the sign bit** (:mod:`primia.inference.sign_circuit`):
   about 3 binary AND words per compared value instead of the 13 of CrypTen's full 64-bit
   adder, in as many rounds. This one is exact in its results, not in its messages: every
   comparison gives the bit CrypTen's gives, from other shares and other dealt triples.

Only CrypTen's TTP provider is changed (primia never uses another) and only without
active security (primia never enables it; with it, CrypTen's own protocol runs). A
process runs one session only (:mod:`primia.inference.processes`), so replacing CrypTen's
functions in this process is safe; all three parties of a session must install it, or
none (their generators would disagree, and the session's results would be garbage):
:func:`primia.inference.parties.join` installs it in every party unless told to run plain
CrypTen (benchmarks measure plain CrypTen that way).
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from primia.inference import sign_circuit

_KEY_WORDS = 2
"""64-bit words drawn from the generator per call: an AES-128 key."""
_TAIL = 16
"""Bytes of keystream produced by ``update`` rather than ``update_into`` (which needs
block size − 1 spare bytes after its output)."""


class _Zeros:
    """A read-only zero buffer, grown as needed: AES-CTR of zeros is the keystream."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lock = threading.Lock()

    def view(self, size: int) -> memoryview:
        with self._lock:
            if len(self._buffer) < size:
                self._buffer = bytearray(max(size, 2 * len(self._buffer)))
            return memoryview(self._buffer)[:size]


_ZEROS = _Zeros()


def keystream(key: bytes, size: int) -> torch.Tensor:
    """``size`` bytes of AES-CTR keystream under ``key`` (counter from 0), as uint8."""
    out = torch.empty(size, dtype=torch.uint8)
    if size == 0:
        return out
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    view = memoryview(out.numpy().data).cast("B")
    head = max(size - _TAIL, 0)
    if head:
        encryptor.update_into(_ZEROS.view(head), view)
    view[head:] = encryptor.update(bytes(size - head))
    return out


def ring_random(
    size: Any,
    ring_size: int = 2**64,
    generator: torch.Generator | None = None,
    bitlength: int = 64,
    **kwargs: Any,
) -> torch.Tensor:
    """Elements uniform over Z/2^``bitlength`` (two's complement int64 for 64 bits, else
    in [0, 2^bitlength)), of shape ``size``, from a key drawn from ``generator`` (CrypTen's
    local generator if None); the signature of CrypTen's ``generate_random_ring_element``."""
    if ring_size != 2**64:
        raise ValueError(f"only the ring Z/2^64 is supported, not Z/{ring_size}")
    device = kwargs.get("device")
    if generator is None:
        import crypten

        generator = crypten.generators["local"][torch.device(device or "cpu")]
    words = torch.randint(-(2**63), 2**63 - 1, (_KEY_WORDS,), generator=generator)
    # torch starts a generator's Mersenne Twister from the low 32 bits of its seed only, so
    # its words carry 32 bits of secrecy (whoever sees a draw finds the seed by trying all
    # 2^32); the key also hashes in the whole 64-bit seed, which both holders set alike
    seed = generator.initial_seed().to_bytes(8, "little")
    key = hashlib.sha256(seed + words.numpy().tobytes()).digest()[:16]
    shape = torch.Size(size) if not isinstance(size, int) else torch.Size([size])
    count = shape.numel()
    elements = keystream(key, 8 * count).view(torch.int64).view(shape)
    if bitlength < 64:
        elements &= (1 << bitlength) - 1
    return elements if device is None else elements.to(device)


def kbit_random(
    size: Any, bitlength: int | None = None, generator: torch.Generator | None = None, **kwargs: Any
) -> torch.Tensor:
    """CrypTen's ``generate_kbit_random_tensor`` on :func:`ring_random`."""
    return ring_random(size, generator=generator, bitlength=bitlength or 64, **kwargs)


def product_size(op: str, size0: Any, size1: Any, *args: Any, **kwargs: Any) -> torch.Size:
    """The size of ``torch.<op>`` of tensors of these sizes, from the sizes alone.

    Elementwise products broadcast; a matrix product of two operands of at least two
    dimensions is (broadcast batch) × n × m; a convolution's output length per spatial
    dimension is ⌊(L + 2·padding − dilation·(k − 1) − 1)/stride⌋ + 1 (PyTorch's formula).
    Anything else is computed on ``meta`` tensors, whose first use imports several hundred
    modules of PyTorch's reference implementations (seconds, on the session's critical
    path) and whose every call dispatches through Python."""
    first, second = torch.Size(size0), torch.Size(size1)
    if op == "mul" and not args and not kwargs:
        return torch.broadcast_shapes(first, second)
    if op == "matmul" and not args and not kwargs and len(first) >= 2 and len(second) >= 2:
        if first[-1] != second[-2]:
            # the dealer's checks rely on this: the formula alone would size any pair
            raise ValueError(f"matmul of {tuple(first)} and {tuple(second)}: inner sizes differ")
        batch = torch.broadcast_shapes(first[:-2], second[:-2])
        return torch.Size([*batch, first[-2], second[-1]])
    if op in _CONVOLUTIONS and not args and (shape := _convolution_size(op, first, second, kwargs)):
        return shape
    return _meta_size(op, first, second, *args, **kwargs)


_CONVOLUTIONS = {"conv1d": 1, "conv2d": 2}
"""The convolutions :func:`product_size` sizes itself, by spatial dimensions."""


def _convolution_size(
    op: str, image: torch.Size, weight: torch.Size, options: dict[str, Any]
) -> torch.Size | None:
    """The output size of a batched convolution with integer (or per-dimension) options,
    or None for anything else (string padding, unbatched input, other keywords)."""
    dims = _CONVOLUTIONS[op]
    if len(image) != dims + 2 or len(weight) != dims + 2 or set(options) - _CONVOLUTION_OPTIONS:
        return None
    settings = []
    for name in ("stride", "padding", "dilation"):
        value = options.get(name, 0 if name == "padding" else 1)
        value = (value,) * dims if isinstance(value, int) else tuple(value)
        if len(value) != dims or not all(isinstance(v, int) for v in value):
            return None
        settings.append(value)
    stride, padding, dilation = settings
    groups = options.get("groups", 1)
    if not isinstance(groups, int):
        return None
    lengths = [
        (image[2 + i] + 2 * padding[i] - dilation[i] * (weight[2 + i] - 1) - 1) // stride[i] + 1
        for i in range(dims)
    ]
    # what torch would refuse (the dealer's checks rely on it): channels that don't match
    # the groups, settings out of range, an empty output
    if (
        groups < 1
        or image[1] != weight[1] * groups
        or weight[0] % groups
        or min(*stride, *dilation) < 1
        or min(padding) < 0
        or min(lengths) < 1
    ):
        raise ValueError(f"{op} of {tuple(image)} by {tuple(weight)} with {options}: not defined")
    return torch.Size([image[0], weight[0], *lengths])


_CONVOLUTION_OPTIONS = frozenset({"stride", "padding", "dilation", "groups"})


def _meta_size(op: str, size0: Any, size1: Any, *args: Any, **kwargs: Any) -> torch.Size:
    first = torch.empty(size0, dtype=torch.long, device="meta")
    second = torch.empty(size1, dtype=torch.long, device="meta")
    size: torch.Size = getattr(torch, op)(first, second, *args, **kwargs).size()
    return size


def install() -> None:
    """Put the faster forms in place of CrypTen's in this process (before ``crypten.init``)."""
    import crypten.common.rng as rng
    import crypten.mpc.primitives.arithmetic as arithmetic
    import crypten.mpc.primitives.beaver as beaver
    import crypten.mpc.primitives.binary as binary
    import crypten.mpc.provider.ttp_provider as ttp

    sign_circuit.install()
    for module in (rng, ttp, arithmetic):
        module.generate_random_ring_element = ring_random
    for module in (rng, ttp, binary):
        module.generate_kbit_random_tensor = kbit_random
    original = beaver.__dict__["__beaver_protocol"]
    if getattr(original, "primia", False):
        return
    protocol = _beaver_protocol(original)
    # a module-level name: "beaver.__beaver_protocol = ..." inside no class is not mangled,
    # but setattr says plainly which global the module's functions look up
    setattr(beaver, "__beaver_protocol", protocol)
    beaver.AND = _binary_and
    ttp.TTPServer._setup_generators = _setup_generators
    beaver.square = _square_protocol
    provider = ttp.TrustedThirdParty
    provider.generate_additive_triple = _additive_triple
    provider.square = _square
    provider.generate_binary_triple = _binary_triple
    provider.wrap_rng = _wrap_rng
    provider.B2A_rng = _b2a_rng


def dealer_seeds(count: int) -> list[torch.Tensor]:
    """The dealer's seeds for the ``count`` computing parties' generators: 64 bits each
    from the operating system. CrypTen drew them from torch's default generator, whose
    Mersenne Twister starts from 32 bits: from its own seed the model owner could find
    that start by trying all 2^32, and with it the data owner's seed and every share the
    data owner draws from it (its images follow from the first opening)."""
    return [
        torch.tensor(int.from_bytes(os.urandom(8), "little", signed=True)) for _ in range(count)
    ]


def _setup_generators(self: Any) -> None:
    """CrypTen's ``TTPServer._setup_generators``, with seeds from :func:`dealer_seeds`."""
    import crypten.communicator as comm
    import crypten.mpc.provider.ttp_provider as ttp

    count = comm.get().get_world_size()
    seeds = dealer_seeds(count)
    sent = [ttp.dist.isend(tensor=seeds[i], dst=i, group=self.ttp_group) for i in range(count)]
    cuda = torch.cuda.is_available()
    self.generators = [torch.Generator(device="cpu") for _ in range(count)]
    self.generators_cuda = [torch.Generator(device="cuda") if cuda else None for _ in range(count)]
    for i in range(count):
        self.generators[i].manual_seed(seeds[i].item())
        if cuda:
            self.generators_cuda[i].manual_seed(seeds[i].item())
        sent[i].wait()
    ttp.dist.barrier(group=self.ttp_group)


def _beaver_protocol(original: Any) -> Any:
    """CrypTen's Beaver multiplication with the bilinear identity of the module docstring,
    the dealer's share of c read last (step 5 of the module docstring)."""
    import crypten.communicator as comm
    from crypten.config import cfg
    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor
    from crypten.mpc.primitives.beaver import IgnoreEncodings

    def protocol(op: str, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        if cfg.mpc.active_security or x.device != y.device:
            return original(op, x, y, *args, **kwargs)
        last = product_size(op, x.size(), y.size(), *args, **kwargs)
        (a, b), c = deal(
            ("additive", x.size(), y.size(), op, *args),
            [x.size(), y.size()],
            last,
            x.device,
            **kwargs,
        )
        a, b = (ArithmeticSharedTensor.from_shares(t, precision=0) for t in (a, b))
        with IgnoreEncodings([a, b, x, y]):
            epsilon, delta = ArithmeticSharedTensor.reveal_batch([x - a, y - b])
        function = getattr(torch, op)
        # z = c + ε·b + (a + ε)·δ at party 0, c + ε·b + a·δ elsewhere (see the module)
        left = a._tensor + epsilon if comm.get().get_rank() == 0 else a._tensor
        z = function(epsilon, b._tensor, *args, **kwargs)
        z += function(left, delta, *args, **kwargs)
        z += c.result()
        return ArithmeticSharedTensor.from_shares(z, precision=0)

    protocol.primia = True  # type: ignore[attr-defined]
    return protocol


def _square_protocol(x: Any) -> Any:
    """CrypTen's ``beaver.square``: z = r² + 2·ε·r + ε² with ε = x − r opened, the public
    ε² added by party 0 only, the dealer's share of r² read last."""
    from crypten.mpc.primitives import ArithmeticSharedTensor
    from crypten.mpc.primitives.beaver import IgnoreEncodings

    (r,), r2 = deal(("square", x.size()), [x.size()], x.size(), x.device)
    shared_r = ArithmeticSharedTensor.from_shares(r, precision=0)
    with IgnoreEncodings([x, shared_r]):
        epsilon = (x - shared_r).reveal()
    z = r * (2 * epsilon)
    if _party0():
        z += epsilon * epsilon
    z += r2.result()
    return ArithmeticSharedTensor.from_shares(z, precision=0)


def _binary_and(x: Any, y: Any) -> Any:
    """CrypTen's Beaver AND of binary shares, on the raw shares.

    With ε = x ⊕ a and δ = y ⊕ b opened, CrypTen returns
    ``(b ∧ ε) ⊕ (a ∧ δ) ⊕ (ε ∧ δ) ⊕ c``, the public ε ∧ δ XORed in by party 0 only, through
    eight temporary shared tensors. Since (a ∧ δ) ⊕ (ε ∧ δ) = (a ⊕ ε) ∧ δ bit by bit, the
    share here is ``c ⊕ (b ∧ ε) ⊕ ((a ⊕ ε) ∧ δ)`` at party 0 and ``c ⊕ (b ∧ ε) ⊕ (a ∧ δ)``
    elsewhere: the same bits, with the dealer's share of c read last.
    """
    from crypten.mpc.primitives.binary import BinarySharedTensor

    size = torch.broadcast_shapes(x.size(), y.size())
    (a, b), c = deal(("binary", x.size(), y.size()), [x.size(), y.size()], size, x.device)
    masked = [x ^ BinarySharedTensor.from_shares(a), y ^ BinarySharedTensor.from_shares(b)]
    epsilon, delta = BinarySharedTensor.reveal_batch(masked)
    left = a ^ epsilon if _party0() else a
    share = b & epsilon  # the broadcast shape of x and y
    share ^= left & delta
    share ^= c.result()
    return BinarySharedTensor.from_shares(share)


def random_bits(size: Any, device: Any = None) -> tuple[torch.Tensor, _Answer]:
    """This party's binary share of a dealt random bit r per element (drawn now) and its
    arithmetic share of r (the dealer's answer at party 0: read it when needed), as
    ``B2A_rng`` deals them."""
    (bits,), arithmetic = deal(("B2A", size), [size], size, device, bitlength=1)
    return bits, arithmetic


class _Request:
    """A request to the dealer sent now by every computing party, its result received
    later (party 0 only).

    The same messages as CrypTen's ``TTPClient.ttp_request`` (the request, the result's
    size, the result), counted by the same communicator statistics.
    """

    def __init__(self, function: str, device: Any, *args: Any, **kwargs: Any) -> None:
        import crypten.communicator as comm
        from crypten.mpc.provider.ttp_provider import TTPClient

        self._client = TTPClient.get()
        self._device = device
        message = {
            "function": function,
            "device": None if device is None else str(device),
            "args": args,
            "kwargs": kwargs,
        }
        comm.get().send_obj(message, comm.get().get_ttp_rank(), self._client.ttp_group)

    def result(self) -> torch.Tensor:
        import crypten.communicator as comm

        dealer = comm.get().get_ttp_rank()
        size = comm.get().recv_obj(dealer, self._client.ttp_group)
        result = torch.empty(size, dtype=torch.long, device=self._device)
        comm.get().broadcast(result, dealer, self._client.comm_group)
        return result


def _party0() -> bool:
    import crypten.communicator as comm

    return bool(comm.get().get_rank() == 0)


def _mirrored() -> bool:
    """Whether the dealer expects every computing party's requests: on primia's links, yes;
    on CrypTen's own gloo group (benchmarks only), which has no dealer check, it reads party
    0's alone, and a request from another party would wait for it forever."""
    import crypten.communicator as comm

    return bool(getattr(comm.get(), "mirrored_requests", False))


def _generator(device: Any) -> torch.Generator:
    from crypten.mpc.provider.ttp_provider import TTPClient

    generator: torch.Generator = TTPClient.get().get_generator(device=device)
    return generator


class _Drawn:
    """A party's last share of a dealt correlation, drawn from its dealer generator."""

    def __init__(self, share: torch.Tensor) -> None:
        self._share = share

    def result(self) -> torch.Tensor:
        return self._share


_Answer = _Request | _Drawn
"""A party's last share of a dealt correlation: read with ``result()``, once."""


def deal(
    request: tuple[Any, ...],
    drawn: list[Any],
    last: Any,
    device: Any,
    bitlength: int = 64,
    **kwargs: Any,
) -> tuple[list[torch.Tensor], _Answer]:
    """A party's shares of one dealt correlation: every party sends ``request`` (the
    dealer's function and its arguments, with ``kwargs``) first (the dealer serves party
    0's only if the others asked the same, :mod:`primia.inference.dealing`; on CrypTen's
    gloo group only party 0 sends, see :func:`_mirrored`), then every party draws its
    shares of sizes ``drawn`` (``bitlength`` bits) from its dealer generator. The last
    share is the dealer's answer at party 0 and drawn, of size ``last``, elsewhere; it is
    returned unread, so that party 0 opens its masked inputs and computes its products
    while the dealer computes (the answer waits in the link meanwhile). Party 0 must read
    it before its next request, so that answers come in the order asked."""
    function, *arguments = request
    asked = None
    if _party0():
        asked = _Request(function, device, *arguments, **kwargs)
    elif _mirrored():
        _Request(function, device, *arguments, **kwargs)  # what the dealer checks party 0's by
    generator = _generator(device)
    shares = [
        ring_random(size, generator=generator, device=device, bitlength=bitlength) for size in drawn
    ]
    if asked is not None:
        return shares, asked
    return shares, _Drawn(ring_random(last, generator=generator, device=device))


def _additive_triple(
    self: Any, size0: Any, size1: Any, op: str, device: Any = None, *args: Any, **kwargs: Any
) -> tuple[Any, Any, Any]:
    from crypten.mpc.primitives import ArithmeticSharedTensor

    last = product_size(op, size0, size1, *args, **kwargs)
    (a, b), c = deal(("additive", size0, size1, op, *args), [size0, size1], last, device, **kwargs)
    return tuple(ArithmeticSharedTensor.from_shares(t, precision=0) for t in (a, b, c.result()))


def _square(self: Any, size: Any, device: Any = None) -> tuple[Any, Any]:
    return _arithmetic_pair("square", size, device)


def _wrap_rng(self: Any, size: Any, device: Any = None) -> tuple[Any, Any]:
    return _arithmetic_pair("wraps", size, device)


def _arithmetic_pair(function: str, size: Any, device: Any) -> tuple[Any, Any]:
    """r and the dealt value for r (its square, or its wraps), arithmetic shares."""
    from crypten.mpc.primitives import ArithmeticSharedTensor

    (r,), dealt = deal((function, size), [size], size, device)
    return tuple(ArithmeticSharedTensor.from_shares(t, precision=0) for t in (r, dealt.result()))


def _binary_triple(self: Any, size0: Any, size1: Any, device: Any = None) -> tuple[Any, Any, Any]:
    from crypten.mpc.primitives import BinarySharedTensor

    last = torch.broadcast_shapes(torch.Size(size0), torch.Size(size1))
    (a, b), c = deal(("binary", size0, size1), [size0, size1], last, device)
    return tuple(BinarySharedTensor.from_shares(t) for t in (a, b, c.result()))


def _b2a_rng(self: Any, size: Any, device: Any = None) -> tuple[Any, Any]:
    from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor

    bits, arithmetic = random_bits(size, device)
    return (
        ArithmeticSharedTensor.from_shares(arithmetic.result(), precision=0),
        BinarySharedTensor.from_shares(bits),
    )
