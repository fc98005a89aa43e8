"""Privacy audits, from Python: what ``primia audit invert``, ``primia audit reid`` and
``primia anonymize`` do (:mod:`primia.audit` and :mod:`primia.anonymize` hold the parts)."""

from primia.anonymize.training import AnonymizerConfig, TrainedAnonymizer, train_anonymizer
from primia.audit import (
    AttackConfig,
    AttackName,
    Defense,
    InversionConfig,
    InversionRun,
    run_inversion_audit,
)
from primia.audit.reid import ReidAudit, ReidConfig, run_reid_audit

__all__ = [
    "AnonymizerConfig",
    "AttackConfig",
    "AttackName",
    "Defense",
    "InversionConfig",
    "InversionRun",
    "ReidAudit",
    "ReidConfig",
    "TrainedAnonymizer",
    "run_inversion_audit",
    "run_reid_audit",
    "train_anonymizer",
]
