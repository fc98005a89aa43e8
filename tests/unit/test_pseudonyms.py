"""Pseudonyms and coarsened demographics of an anonymized copy (pure logic)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from primia.anonymize.pseudonyms import (
    Deidentification,
    age_band,
    default_key_path,
    load_or_create_key,
    pseudonym,
    pseudonyms,
)
from primia.errors import ConfigError
from primia.evaluate.subgroups import _age


def test_the_key_is_private_reused_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "copy.id-key"
    key = load_or_create_key(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key  # the same key: the same pseudonyms next time
    path.write_text("not hex\n")
    with pytest.raises(ConfigError, match="not a pseudonymization key"):
        load_or_create_key(path)


def test_pseudonyms_hide_the_id_and_depend_on_the_key() -> None:
    first, second = b"k" * 32, b"q" * 32
    mapping = pseudonyms(first, ["MRN-0001", "MRN-0002", "MRN-0001"])
    assert set(mapping) == {"MRN-0001", "MRN-0002"}
    assert all(p.startswith("p-") and len(p) == 18 and "0001" not in p for p in mapping.values())
    assert pseudonym(first, "MRN-0001") == mapping["MRN-0001"]
    assert pseudonym(second, "MRN-0001") != mapping["MRN-0001"]


def test_ages_are_banded_and_top_coded() -> None:
    assert [age_band(a, 10) for a in ("0", "47", "89.5", "90", "104", "x", "-3")] == [
        "0-9",
        "40-49",
        "80-89",
        "90+",
        "90+",
        "",
        "",
    ]
    assert age_band("87", 20) == "80-89"  # the last band stops at the top code
    assert [_age(text) for text in ("40-49", "90+", "47")] == [40.0, 90.0, 47.0]


def test_the_key_stays_out_of_the_copy_and_bad_requests_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "copy"
    assert Deidentification().key_path(out) == default_key_path(out) == tmp_path / "copy.id-key"
    with pytest.raises(ConfigError, match="keep --id-key outside --out"):
        Deidentification(id_key=out / "key").key_path(out)
    with pytest.raises(ConfigError, match="cannot drop patient_id"):
        Deidentification(drop={"patient_id"})
    with pytest.raises(ConfigError, match="--age-band 0"):
        Deidentification(age_band=0)
    described = Deidentification(age_band=5, drop={"sex"}).describe(["site", "sex", "age"])
    assert described["sex"] == "dropped" and described["site"] == "kept"
    assert described["age"].startswith("5-year bands")
    assert "HMAC-SHA256" in described["patient_id"]


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    # A key readable by the group or others lets any local account link pseudonyms back to
    # medical record numbers: it is refused, not used, and the message names the fix.
    path = tmp_path / "copy.id-key"
    key = load_or_create_key(path)
    for loose in (0o644, 0o640, 0o604):
        path.chmod(loose)
        with pytest.raises(ConfigError, match=r"read or changed by other accounts.*chmod 600"):
            load_or_create_key(path)
    path.chmod(0o600)
    assert load_or_create_key(path) == key
    path.chmod(0o400)  # read-only for its owner is private too
    assert load_or_create_key(path) == key
