"""Subgroups of a test split by the patient attributes a manifest carries (sex, age).

A group is a boolean mask over the samples, named ``sex=F``, ``sex=M`` or by an age band
(``age=<18``, ``age=18-39``, ``age=40-64``, ``age=65+`` with the default edges). Samples
whose attribute is missing belong to no group of that attribute. Subgroup metrics answer
"does the model (or DP) serve some patients worse?", e.g. the DP vs non-DP difference per
group.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from primia.data.dataset import RadiographDataset

ALL = "all"
DEFAULT_AGE_EDGES = (18.0, 40.0, 65.0)
SEXES = {"f": "F", "female": "F", "w": "F", "m": "M", "male": "M"}


def attributes_of(dataset: RadiographDataset) -> dict[str, np.ndarray]:
    """Per-sample ``sex`` (``"F"``, ``"M"`` or ``""``) and ``age`` (float, NaN unknown)
    from the records' manifest columns."""
    sexes = [
        SEXES.get(record.extra.get("sex", "").strip().lower(), "") for record in dataset.records
    ]
    ages = [_age(record.extra.get("age", "")) for record in dataset.records]
    return {"sex": np.array(sexes, dtype=object), "age": np.array(ages, dtype=np.float64)}


def age_band_names(edges: Sequence[float]) -> list[str]:
    """``["<18", "18-39", "40-64", "65+"]`` for edges (18, 40, 65)."""
    cuts = [int(edge) for edge in edges]
    names = [f"<{cuts[0]}"]
    names += [f"{low}-{high - 1}" for low, high in itertools.pairwise(cuts)]
    return [*names, f"{cuts[-1]}+"]


def subgroup_masks(
    attributes: Mapping[str, np.ndarray], age_edges: Sequence[float] = DEFAULT_AGE_EDGES
) -> dict[str, npt.NDArray[np.bool_]]:
    """The non-empty groups of ``attributes`` (see the module docstring)."""
    masks: dict[str, npt.NDArray[np.bool_]] = {}
    if "sex" in attributes:
        sexes = np.asarray(attributes["sex"])
        for sex in ("F", "M"):
            mask = sexes == sex
            if mask.any():
                masks[f"sex={sex}"] = mask
    if "age" in attributes and age_edges:
        ages = np.asarray(attributes["age"], dtype=np.float64)
        known = np.isfinite(ages)
        band = np.searchsorted(np.asarray(age_edges), np.where(known, ages, 0), side="right")
        for index, name in enumerate(age_band_names(age_edges)):
            mask = known & (band == index)
            if mask.any():
                masks[f"age={name}"] = mask
    return masks


def _age(text: str) -> float:
    """An age in years; a band of an anonymized copy (``40-49``, ``90+``) counts as its
    lowest age (a band that straddles an edge falls below the edge)."""
    try:
        age = float(text.split("-")[0].rstrip("+") if text[:1].isdigit() else text)
    except ValueError:
        return float("nan")
    return age if 0 <= age < 150 else float("nan")
