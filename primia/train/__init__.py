"""Local training with and without differential privacy, and the privacy ledger."""

from primia.train.ledger import Budget, PrivacyLedger
from primia.train.local import PrivacyReport, TrainResult, evaluate, resolve_device, train_local
from primia.train.train_config import DPConfig, TrainConfig

__all__ = [
    "Budget",
    "DPConfig",
    "PrivacyLedger",
    "PrivacyReport",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "resolve_device",
    "train_local",
]
