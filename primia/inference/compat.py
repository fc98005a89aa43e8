"""CrypTen 0.4.1 on current PyTorch: the shims it needs, in one place, applied only here.

Importing primia never touches torch; :func:`import_crypten` installs the shims (once)
and returns the ``crypten`` module, so only code that runs encrypted inference sees them.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

_lock = threading.Lock()


def import_crypten() -> ModuleType:
    """``crypten``, importable on this torch (see the shims below)."""
    with _lock:
        # CrypTen's ONNX converter imports torch.onnx._internal.registration at import
        # time. PyTorch 2.9 moved the TorchScript exporter's internals, that registry
        # included, under torch.onnx._internal.torchscript_exporter when the dynamo-based
        # exporter became the default; the module is the same, only its path moved.
        _alias(
            "torch.onnx._internal.registration",
            "torch.onnx._internal.torchscript_exporter.registration",
        )
        return importlib.import_module("crypten")


def _alias(old: str, new: str) -> None:
    """Make ``import old`` find ``new`` when ``old`` no longer exists."""
    if old in sys.modules:
        return
    try:
        importlib.import_module(old)
    except ModuleNotFoundError:
        sys.modules[old] = importlib.import_module(new)
