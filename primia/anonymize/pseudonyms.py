"""What an anonymized copy says about its patients: pseudonyms and coarsened demographics.

A copy meant to leave the hospital must not carry the medical record number. Each
``patient_id`` becomes ``p-`` followed by the first 16 hex digits (64 bits) of
``HMAC-SHA256(key, patient_id)``, with a 32-byte random key kept at the hospital (a file
readable by its owner only, never written into the copy). The same key gives the same
pseudonym to the same patient in every copy, so copies can be joined, and only the
key's holder can link a pseudonym back (by hashing its own IDs); without the key, HMAC's
pseudorandomness makes a pseudonym independent of the ID. A collision among 64-bit
pseudonyms of ``n`` patients has probability about ``n² / 2⁶⁵`` and is refused, not
merged.

Demographics are coarsened on request: ages into bands of ``age_band`` years (``40-49``),
top-coded at 90 (``90+``, as HIPAA's safe harbour asks); ``sex``, ``age``, ``site`` and
``view`` can be dropped. :meth:`Deidentification.describe` says, column by column, what a
copy keeps.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from primia.errors import ConfigError
from primia.files import PRIVATE, atomic_write_bytes
from primia.pki import read_private

DROPPABLE = ("site", "sex", "age", "view")
TOP_CODED_AGE = 90
KEY_BYTES = 32


def default_key_path(out: Path) -> Path:
    """The key's default place: beside the copy (``OUT.id-key``), never inside it."""
    return out.parent / f"{out.name}.id-key"


def load_or_create_key(path: Path) -> bytes:
    """The key at ``path``, created (random, owner-only permissions) if it is absent."""
    if not path.exists():
        atomic_write_bytes(path, secrets.token_hex(KEY_BYTES).encode() + b"\n", mode=PRIVATE)
    try:
        key = bytes.fromhex(read_private(path).decode(errors="replace").strip())
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ConfigError(
            f"{path} is not a pseudonymization key (hex, at least 16 bytes); point --id-key "
            "at the key of earlier copies or at a path that does not exist yet"
        )
    return key


def pseudonym(key: bytes, patient_id: str) -> str:
    """``p-`` and 64 bits of ``HMAC-SHA256(key, patient_id)`` in hex."""
    digest = hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()
    return f"p-{digest[:16]}"


def pseudonyms(key: bytes, patient_ids: Sequence[str]) -> dict[str, str]:
    """Each distinct ID's pseudonym; a collision (two patients, one pseudonym) is refused."""
    mapping = {patient_id: pseudonym(key, patient_id) for patient_id in set(patient_ids)}
    if len(set(mapping.values())) != len(mapping):
        raise ConfigError("two patients share a pseudonym under this key; use a new --id-key")
    return mapping


def age_band(text: str, width: int) -> str:
    """``"47"`` → ``"40-49"`` for ``width`` 10; ``"90+"`` from 90 on; ``""`` if unreadable."""
    try:
        age = float(text)
    except ValueError:
        return ""
    if not 0 <= age < 150:
        return ""
    if age >= TOP_CODED_AGE:
        return f"{TOP_CODED_AGE}+"
    low = int(age // width) * width
    return f"{low}-{min(low + width, TOP_CODED_AGE) - 1}"


@dataclass(frozen=True)
class Deidentification:
    """How a copy treats its patients: a keyed pseudonym (key at ``id_key``, created if
    absent; ``None``: beside the copy, see :func:`default_key_path`), ages in bands of
    ``age_band`` years (``None`` keeps them), and the columns of :data:`DROPPABLE` to drop.
    """

    id_key: Path | None = None
    age_band: int | None = None
    drop: Collection[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.drop) - set(DROPPABLE))
        if unknown:
            raise ConfigError(
                f"cannot drop {', '.join(unknown)}; droppable columns: {', '.join(DROPPABLE)}"
            )
        if self.age_band is not None and not 1 <= self.age_band <= TOP_CODED_AGE:
            raise ConfigError(f"--age-band {self.age_band} years: choose 1 to {TOP_CODED_AGE}")

    def key_path(self, out: Path) -> Path:
        path = self.id_key if self.id_key is not None else default_key_path(out)
        if path.resolve().is_relative_to(out.resolve()):
            raise ConfigError(
                f"the pseudonymization key {path} would be inside the copy {out}, which "
                "leaves the hospital; keep --id-key outside --out"
            )
        return path

    def age(self, text: str) -> str:
        return text if self.age_band is None else age_band(text, self.age_band)

    def describe(self, columns: Collection[str]) -> dict[str, str]:
        """Column → what the copy holds, for the columns the source has."""
        kept: dict[str, str] = {
            "patient_id": "pseudonym: HMAC-SHA256 of the original ID under the hospital's "
            "key (kept at the hospital, not in this copy)",
            "path": "new file names (000000.png, ...)",
            "pixels": "anonymized by the generator",
        }
        for column in ("site", "view", "sex"):
            if column in columns:
                kept[column] = "dropped" if column in self.drop else "kept"
        if "age" in columns:
            if "age" in self.drop:
                kept["age"] = "dropped"
            elif self.age_band is not None:
                kept["age"] = f"{self.age_band}-year bands, {TOP_CODED_AGE}+ top-coded"
            else:
                kept["age"] = "kept (exact)"
        if "split" in columns:
            kept["split"] = "kept"
        kept["labels"] = "kept"
        return kept
