"""The transfer matrix's pure parts: the models, the per-round ε, the figures, the files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from primia.errors import ConfigError
from primia.evaluate.evaluation import Evaluation, MetricTable
from primia.evaluate.metrics import MEAN, METRICS
from primia.train.accounting import Mechanism, epsilon_of, noise_for_target
from primia.transfer.analysis import analyse
from primia.transfer.matrix import (
    FEDERATED,
    ModelPlan,
    TransferSettings,
    plan_models,
    round_epsilon,
)
from primia.transfer.report import below_chance, write_matrix_report

SITES = ("a", "b")
RESAMPLES = 400


def test_models_per_level_and_settings_checks(tmp_path: Path) -> None:
    settings = TransferSettings(out=tmp_path, epsilons=(8.0, 1.0))
    models = plan_models(SITES, settings)
    assert [m.model_id for m in models] == [
        "a.nodp",
        "b.nodp",
        "federated.nodp",
        "a.eps1",
        "b.eps1",
        "federated.eps1",
        "a.eps8",
        "b.eps8",
        "federated.eps8",
    ]
    assert models[2].sites == SITES and models[0].sites == ("a",)
    only_local = plan_models(SITES, TransferSettings(out=tmp_path, federated=False))
    assert FEDERATED not in {m.trained_at for m in only_local}
    for bad in (
        {"epsilons": (0.0,)},
        {"epsilons": (1.0, 1.0)},
        {"rounds": 0},
        {"epsilons": (), "non_private": False},
        {"resamples": 0},
    ):
        with pytest.raises(ConfigError):
            TransferSettings(out=tmp_path, **bad)


def test_round_epsilon_composes_to_the_total() -> None:
    per_round = round_epsilon(
        3.0,
        delta=1e-5,
        rounds=4,
        epochs=2,
        batch_size=32,
        train_examples=[400, 300],
        accountant="rdp",
    )
    assert 3.0 / 4 < per_round < 3.0  # composition is sublinear
    for examples in (400, 300):
        batches = -(-examples // 32)
        sigma = noise_for_target(
            epsilon=per_round,
            delta=1e-5,
            sample_rate=1 / batches,
            steps=2 * batches,
            accountant="rdp",
        )
        total = epsilon_of(
            [Mechanism(sigma, 1 / batches, 2 * batches)] * 4, delta=1e-5, accountant="rdp"
        )
        assert total <= 3.0 + 0.05
    assert (
        round_epsilon(2.0, delta=1e-5, rounds=1, epochs=1, batch_size=8, train_examples=[10]) == 2.0
    )


def cell(value: float, seed: int, spread: float = 0.02) -> Evaluation:
    """A fake evaluation whose mean AUROC is ``value``; replicates spread around it."""
    rng = np.random.default_rng(seed)
    columns = ("x", MEAN)
    values = np.full((len(METRICS), 2), value)
    replicates = (value + rng.normal(0, spread, (RESAMPLES, len(METRICS), 2))).clip(0, 1)
    table = MetricTable(columns, values, replicates.astype(np.float32), 100, (40,))
    return Evaluation(
        "binary", ("x",), np.array([0.5]), (), RESAMPLES, {"all": table, "sex=F": table}
    )


def test_matrix_drop_and_dp_comparison() -> None:
    models = [ModelPlan(s, e, (s,)) for e in (None, 1.0) for s in SITES]
    site_seed = {"a": 1, "b": 2}  # one resampling seed per test site, shared by models
    values = {
        ("a.nodp", "a"): 0.90,
        ("a.nodp", "b"): 0.80,
        ("b.nodp", "b"): 0.88,
        ("b.nodp", "a"): 0.78,
        ("a.eps1", "a"): 0.80,
        ("a.eps1", "b"): 0.70,
        ("b.eps1", "b"): 0.78,
        ("b.eps1", "a"): 0.68,
    }
    cells = {key: cell(v, site_seed[key[1]]) for key, v in values.items()}
    analysis = analyse(models, SITES, cells)
    baseline, private = analysis["levels"]["non-DP"], analysis["levels"]["ε=1"]
    assert baseline["matrix"]["a"]["b"]["value"] == pytest.approx(0.80)
    assert baseline["drop"]["a"]["drop"]["value"] == pytest.approx(0.10)
    assert baseline["mean_drop"]["value"] == pytest.approx(0.10)
    assert private["mean_drop"]["value"] == pytest.approx(0.10)
    versus = private["vs_non_dp"]
    # Same drop with and without DP: the difference is 0 and its p-value 1.
    assert versus["mean_drop_difference"]["difference"] == pytest.approx(0.0, abs=1e-12)
    assert versus["mean_drop_difference"]["p_value"] > 0.5
    # DP costs 0.10 AUROC everywhere, clearly beyond the replicates' spread.
    assert versus["difference_by_group"]["all"]["difference"] == pytest.approx(-0.10)
    assert versus["difference_by_group"]["all"]["p_value"] < 0.01
    assert "sex=F" in versus["difference_by_group"]
    json.dumps(analysis)


def test_a_missing_cell_leaves_the_drop_out() -> None:
    models = [ModelPlan("a", None, ("a",)), ModelPlan("b", None, ("b",))]
    cells = {
        ("a.nodp", "a"): cell(0.9, 1),
        ("b.nodp", "b"): cell(0.9, 2),
        ("b.nodp", "a"): cell(0.8, 1),
    }
    level = analyse(models, SITES, cells)["levels"]["non-DP"]
    assert set(level["drop"]) == {"b"} and "mean_drop" not in level
    assert "b" not in level["matrix"]["a"]


def test_report_files(tmp_path: Path) -> None:
    models = [ModelPlan(s, e, (s,)) for e in (None, 3.0) for s in SITES]
    cells = {(m.model_id, t): cell(0.8, i) for i, m in enumerate(models) for t in SITES}
    cells[("b.eps3", "a")] = cell(0.35, 9)  # worse than chance
    analysis = analyse(models, SITES, cells)
    assert below_chance(analysis) == [("ε=3", "b", "a", pytest.approx(0.35))]
    files = write_matrix_report(
        tmp_path,
        summary={"sites": list(SITES), "rounds": 2, "resamples": RESAMPLES},
        analysis=analysis,
        models=models,
        cells=cells,
        timings={"total_seconds": 12.0},
    )
    assert [p.name for p in files.heatmaps] == ["heatmap-nodp.png", "heatmap-eps3.png"]
    with Image.open(files.heatmaps[0]) as image:
        assert image.size == (130 + 150 * 2 + 110, 70 + 150 + 20)  # the legend on the right
        legend = [image.getpixel((130 + 300 + 28, 70 + k)) for k in (1, 128)]
        assert legend[0] != legend[1]  # a colour bar from high to low
    rows = files.csv.read_text().splitlines()
    assert len(rows) == 1 + len(models) * len(SITES)
    assert rows[1].startswith("non-DP,a.nodp,a,a,100,0.8000")
    document = json.loads(files.json.read_text())
    assert document["timings"]["total_seconds"] == 12.0 and "levels" in document
    page = files.html.read_text()
    assert "heatmap-eps3.png" in page and "On-site" in page
    assert "Warning:</strong> 1 cell(s) below AUROC 0.5" in page
