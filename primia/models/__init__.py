"""Models for one-channel radiographs that DP-SGD and encrypted inference can both run.

>>> from primia.models import build_model
>>> model = build_model("resnet9", num_classes=4, width=8)
>>> sum(p.numel() for p in model.parameters()) > 0
True
"""

from primia.models import cnn as _cnn  # noqa: F401  (registers "cnn", "lenet")
from primia.models import densenet as _densenet  # noqa: F401  (registers "densenet121")
from primia.models import resnet as _resnet  # noqa: F401  (registers "resnet9", "resnet18")
from primia.models.compat import ALLOWED_LAYERS, check_model, incompatibilities
from primia.models.registry import build_model, model_names, register_model

BUILT_IN_MODELS = frozenset(model_names())
"""The models primia registers itself; the rest are plug-ins (:mod:`primia.models.plugins`)."""

__all__ = [
    "ALLOWED_LAYERS",
    "BUILT_IN_MODELS",
    "build_model",
    "check_model",
    "incompatibilities",
    "model_names",
    "register_model",
]
