"""The CrypTen compatibility layer touches torch only when encrypted inference asks for it."""

import subprocess
import sys


def test_importing_primia_leaves_torch_and_crypten_alone() -> None:
    script = (
        "import sys, primia, primia.models, primia.federated.coordinator, primia.inference; "
        "assert 'crypten' not in sys.modules; "
        "assert 'torch.onnx._internal.registration' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_import_crypten_installs_the_registry_alias() -> None:
    script = (
        "import sys; from primia.inference.compat import import_crypten; "
        "crypten = import_crypten(); "
        "import torch.onnx._internal.torchscript_exporter.registration as moved; "
        "assert sys.modules['torch.onnx._internal.registration'] is moved; "
        "assert hasattr(crypten, 'cryptensor')"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
