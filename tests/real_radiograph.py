"""One real chest radiograph: pydicom-data's RG1, a computed-radiography PA chest from the
NEMA WG04 compression test set (MIT-licensed package), stored four ways: UNCR (uncompressed
original), J2KR (JPEG 2000 lossless), J2KI (JPEG 2000 lossy) and UNCI (J2KI decoded and
stored uncompressed). 1955 x 1841 pixels, 15 bits stored, MONOCHROME1, with a window.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ENCODINGS = ("UNCR", "J2KR", "J2KI", "UNCI")


def rg1(encoding: str) -> Path:
    """The RG1 file in one encoding; the test is skipped without pydicom-data."""
    data_store = pytest.importorskip(
        "data_store", reason="pydicom-data is not installed (make install-dev installs it)"
    )
    return Path(data_store.__file__).parent / "data" / f"RG1_{encoding}.dcm"


def rg1_dataset(folder: Path) -> Path:
    """A manifest folder of the four encodings as four patients, labelled 1, 0, 1, 0 (the
    labels are made up: the file carries no finding) so the audits have two classes."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,patient_id,pneumonia"]
    for index, encoding in enumerate(ENCODINGS):
        shutil.copy(rg1(encoding), folder / f"{encoding}.dcm")
        lines.append(f"{encoding}.dcm,rg1-{encoding},{1 - index % 2}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder
