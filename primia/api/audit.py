"""Privacy audits, from Python: what ``primia audit invert``, ``primia audit reid`` and
``primia anonymize`` do (:mod:`primia.audit` and :mod:`primia.anonymize` hold the parts)."""

from primia.anonymize.evaluation import (
    AnonymizerCurve,
    AnonymizerEvaluation,
    CurvePoint,
    evaluate_anonymizer,
    evaluate_curve,
)
from primia.anonymize.report import write_anonymization_report
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
    "AnonymizerCurve",
    "AnonymizerEvaluation",
    "AttackConfig",
    "AttackName",
    "CurvePoint",
    "Defense",
    "InversionConfig",
    "InversionRun",
    "ReidAudit",
    "ReidConfig",
    "TrainedAnonymizer",
    "evaluate_anonymizer",
    "evaluate_curve",
    "run_inversion_audit",
    "run_reid_audit",
    "train_anonymizer",
    "write_anonymization_report",
]
