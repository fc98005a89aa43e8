"""``primia evaluate``: one checkpoint (or two, compared) on one dataset, on this machine.

The dataset is split by patient exactly as ``primia train`` splits it (same fractions and
seed give the same patients), thresholds are chosen on the validation split and the
metrics reported on the test split; see :mod:`primia.evaluate.evaluation`. Given a second
model, both are resampled alike and :func:`~primia.evaluate.evaluation.compare` gives the
paired differences.

>>> result = evaluate_checkpoint(EvaluateConfig(model=Path("runs/a"), data=Path("data")))
... # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from primia.data import load_splits
from primia.errors import DataError
from primia.evaluate.bootstrap import DEFAULT_RESAMPLES
from primia.evaluate.evaluation import Comparison, Evaluation, compare, evaluate_scores
from primia.evaluate.report import evaluation_html
from primia.evaluate.store import save_evaluation
from primia.files import atomic_write_bytes
from primia.models.checkpoint import find_checkpoint, load_model
from primia.scoring.predict import predict
from primia.train.local import resolve_device


@dataclass(frozen=True)
class EvaluateConfig:
    model: Path
    """A checkpoint, or a run directory holding ``model.safetensors``."""
    data: Path
    out: Path | None = None
    compare_with: Path | None = None
    """A second model, evaluated on the same samples and resamples (paired)."""
    site: str | None = None
    """Only this site's images (a manifest with a ``site`` column)."""
    label_columns: list[str] | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    subgroups: bool = True
    device: str = "auto"


@dataclass(frozen=True)
class LocalEvaluation:
    evaluation: Evaluation
    other: Evaluation | None
    comparison: Comparison | None
    seconds: float


def evaluate_checkpoint(config: EvaluateConfig) -> LocalEvaluation:
    """Evaluate ``config.model`` (and ``config.compare_with``) and, given ``config.out``,
    write ``evaluation.json`` (with ``comparison`` when two models were given) and
    ``report.html`` (:mod:`primia.evaluate.report`)."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    paths = [find_checkpoint(config.model)]
    if config.compare_with is not None:
        paths.append(find_checkpoint(config.compare_with))
    evaluations = []
    for path in paths:
        model, spec = load_model(path)
        splits = load_splits(
            config.data,
            image_size=spec.image_size,
            site=config.site,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=config.split_seed,
            label_columns=config.label_columns,
        )
        dataset = splits.train
        if tuple(spec.label_names) != dataset.label_names or spec.task != str(dataset.task):
            raise DataError(
                f"{path} predicts {spec.task} {list(spec.label_names)}, {config.data} holds "
                f"{dataset.task} {list(dataset.label_names)}; choose --label-columns to match"
            )
        if splits.test is None or len(splits.test) == 0:
            raise DataError("the test split is empty; give --test-fraction above 0")
        evaluations.append(
            evaluate_scores(
                predict(model, splits.val, device=device),
                predict(model, splits.test, device=device),
                resamples=config.resamples,
                seed=config.seed,
                subgroups=config.subgroups,
            )
        )
    other = evaluations[1] if len(evaluations) > 1 else None
    comparison = compare(evaluations[0], other) if other is not None else None
    result = LocalEvaluation(
        evaluation=evaluations[0],
        other=other,
        comparison=comparison,
        seconds=time.perf_counter() - started,
    )
    if config.out is not None:
        write_local_evaluation(config, paths, result)
    return result


def write_local_evaluation(
    config: EvaluateConfig, paths: list[Path], result: LocalEvaluation
) -> None:
    out = config.out
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    save_evaluation(out / "model", result.evaluation, meta={"model": str(paths[0])})
    document = {
        "model": str(paths[0]),
        "data": str(config.data),
        "evaluation": result.evaluation.as_dict(),
        "seconds": result.seconds,
    }
    if result.other is not None and result.comparison is not None:
        save_evaluation(out / "compared", result.other, meta={"model": str(paths[1])})
        document["compared_with"] = str(paths[1])
        document["other"] = result.other.as_dict()
        document["comparison"] = result.comparison.as_dict()
    atomic_write_bytes(out / "evaluation.json", (json.dumps(document, indent=2) + "\n").encode())
    page = evaluation_html(
        result.evaluation,
        model=str(paths[0]),
        data=str(config.data),
        other=result.other,
        other_model=str(paths[1]) if len(paths) > 1 else "",
        comparison=result.comparison,
    )
    atomic_write_bytes(out / "report.html", page.encode())
