"""An :class:`~primia.evaluate.evaluation.Evaluation` on disk: a JSON file and its arrays.

``<stem>.safetensors`` holds every group's values (float64) and bootstrap replicates
(float32); ``<stem>.json`` holds the rest, and whatever the caller adds under ``meta``.
The arrays are written first and the JSON last, both atomically, so a JSON file is the
mark of a complete evaluation (a resumed transfer matrix skips it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from primia.errors import DataError
from primia.evaluate.evaluation import Evaluation, MetricTable
from primia.files import atomic_write_bytes


def save_evaluation(stem: Path, evaluation: Evaluation, meta: dict[str, Any] | None = None) -> None:
    tensors = {}
    for name, table in evaluation.groups.items():
        tensors[f"values/{name}"] = torch.from_numpy(np.ascontiguousarray(table.values))
        tensors[f"replicates/{name}"] = torch.from_numpy(
            np.ascontiguousarray(table.replicates, dtype=np.float32)
        )
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(_file(stem, ".safetensors"), save_safetensors(tensors))
    document = {
        **evaluation.as_dict(),
        "columns": list(evaluation.overall.columns),
        "metric_names": list(evaluation.overall.metrics),
        "meta": meta or {},
    }
    atomic_write_bytes(_file(stem, ".json"), (json.dumps(document, indent=2) + "\n").encode())


def load_evaluation(stem: Path) -> tuple[Evaluation, dict[str, Any]]:
    """The evaluation saved at ``stem`` and its ``meta``."""
    try:
        document = json.loads(_file(stem, ".json").read_text())
        arrays = load_safetensors(_file(stem, ".safetensors").read_bytes())
    except (OSError, ValueError) as error:
        raise DataError(
            f"{stem}.json/.safetensors cannot be read ({error}); delete both and the cell "
            "is evaluated again"
        ) from error
    columns = tuple(document["columns"])
    metrics = tuple(document["metric_names"])
    confidence = float(document["bootstrap"]["confidence"])
    groups = {
        name: MetricTable(
            columns=columns,
            values=arrays[f"values/{name}"].numpy(),
            replicates=arrays[f"replicates/{name}"].numpy(),
            num_examples=int(group["examples"]),
            positives=tuple(int(group["positives"][c]) for c in columns[:-1]),
            confidence=confidence,
            metrics=metrics,
        )
        for name, group in document["groups"].items()
    }
    labels = tuple(document["labels"])
    thresholds = np.array(
        [
            np.nan if document["thresholds"][n] is None else document["thresholds"][n]
            for n in labels
        ],
        dtype=np.float64,
    )
    evaluation = Evaluation(
        task=document["task"],
        label_names=labels,
        thresholds=thresholds,
        threshold_notes=tuple(document["threshold_notes"]),
        resamples=int(document["bootstrap"]["resamples"]),
        groups=groups,
        threshold_rule=document["threshold_rule"],
        confidence=confidence,
    )
    return evaluation, document["meta"]


def evaluation_exists(stem: Path) -> bool:
    """Whether a complete evaluation is saved at ``stem``."""
    return _file(stem, ".json").exists()


def _file(stem: Path, suffix: str) -> Path:
    # Not with_suffix: stems hold dots ("site0.eps1__site1").
    return stem.parent / (stem.name + suffix)
