"""Typed errors. Every message names the problem and the fix.

The CLI prints a :class:`PrimiaError` as one line and exits with status 2; anything else is
a bug and keeps its traceback.
"""


class PrimiaError(Exception):
    """Base class of every error primia raises on purpose."""


class ConfigError(PrimiaError):
    """A configuration value is missing, of the wrong type or out of range."""


class DataError(PrimiaError):
    """A dataset cannot be read: a missing file, an unreadable image, a bad manifest row."""


class ModelError(PrimiaError):
    """A model name is unknown, or a model is not compatible with DP or encrypted inference."""


class PrivacyBudgetExceeded(PrimiaError):
    """A training plan would spend more privacy than the ledger's budget allows."""


class PrivacyUnitMismatch(PrimiaError):
    """A release protects another unit (patient, example) than the ledger's earlier ones."""


class LedgerError(PrimiaError):
    """A privacy ledger file is corrupt or inconsistent."""


class LedgerIntegrityError(LedgerError):
    """A privacy ledger was changed, cut or lost (its hash chain or anchor disagrees), or
    reports less ε than the coordinator recorded: no training until an operator repairs it."""
