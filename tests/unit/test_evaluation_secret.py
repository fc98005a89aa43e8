"""The node's evaluation secret is its owner's only, from its first byte on."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from primia.errors import ConfigError
from primia.federated.data_owner import _secret_key


def test_the_evaluation_secret_is_private_and_a_readable_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.key"
    key = _secret_key(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _secret_key(path) == key
    # Left readable (a crash between write and chmod, a restore from backup): anyone on
    # the host could recompute which samples each bootstrap resample drew.
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"read or changed by other accounts.*chmod 600"):
        _secret_key(path)
