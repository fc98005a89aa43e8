"""Server optimisers and FedProx on non-IID sites: test AUROC per round, per site and pooled.

Three synthetic hospitals (``primia.data.synth``: each its own intensity curve, noise,
blur, exposure gradient, marker and prevalences), made more heterogeneous by a label
skew: site k keeps only ``--keep`` of its training images positive for finding k. Every
method starts from the same initial model and trains the same rounds, each node with
DP-SGD (RDP accountant) at ``--epsilon-per-round``; the ε each node spent over the run
(its ledger's composition) is printed. The server sees only the example-weighted mean of
the updates, which is what secure aggregation reveals, so the federation is simulated in
this process (no transport: the optimisers' arithmetic is the coordinator's).

Methods: FedAvg; FedProx (μ = ``--mu``) with FedAvg at the server; FedAdam and FedYogi
(server lr ``--server-lr``). Printed: pooled test mean AUROC per round, then per site
and pooled after the last round with 95 % bootstrap intervals (``--resamples`` over test
images), the paired bootstrap difference of each method against FedAvg on the site
where FedAvg does worst, and the machine's load.

    python benchmarks/bench_federated_optimizers.py              # about 10 min on 2 free cores
    python benchmarks/bench_federated_optimizers.py --rounds 3 --patients 30
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from machine import CpuWatch, load_average

from primia.data import RadiographDataset, only_site, open_dataset, patient_split
from primia.data.synth import FINDINGS, SynthConfig, write_dataset
from primia.evaluate.bootstrap import resample_counts
from primia.evaluate.metrics import weighted_auroc
from primia.federated.server_optimizer import ServerOptimizer, ServerOptimizerConfig
from primia.models.checkpoint import ModelSpec
from primia.train.local import fit, logits_of
from primia.train.train_config import DPConfig, TrainConfig

CPU = torch.device("cpu")


@dataclass(frozen=True)
class Method:
    name: str
    server: ServerOptimizerConfig
    mu: float = 0.0


@dataclass
class Site:
    name: str
    train: RadiographDataset
    test: RadiographDataset


def sites(root: Path, args: argparse.Namespace) -> list[Site]:
    config = SynthConfig(sites=3, patients_per_site=args.patients, size=32, seed=args.seed)
    write_dataset(root, config, progress=False)
    dataset = open_dataset(root, image_size=32)
    result = []
    for k, name in enumerate(config.site_names):
        splits = patient_split(only_site(dataset, name), val_fraction=0.1, test_fraction=0.3)
        targets = splits.train.targets()
        rng = np.random.default_rng(args.seed + k)
        keep = [
            i
            for i in range(len(splits.train))
            if not targets[i, k] or rng.random() < args.keep  # label-prevalence skew
        ]
        assert splits.test is not None
        result.append(Site(name, splits.train.subset(keep), splits.test))
    return result


def mean_auroc(model: torch.nn.Module, test: RadiographDataset, weights: np.ndarray) -> np.ndarray:
    """Mean AUROC over the findings for each row of bootstrap ``weights``."""
    scores = logits_of(model, test.uint8_tensors()[0], device=CPU).numpy().astype(np.float64)
    labels = test.targets().astype(bool)
    per_label = [
        weighted_auroc(scores[:, j], labels[:, j], weights)
        for j in range(labels.shape[1])
        if 0 < labels[:, j].sum() < len(labels)
    ]
    return np.nanmean(np.stack(per_label), axis=0)


def run(method: Method, data: list[Site], args: argparse.Namespace, ledgers: Path):
    torch.manual_seed(args.seed)
    spec = ModelSpec("cnn", num_outputs=len(FINDINGS), image_size=32)
    model = spec.build()
    optimizer = ServerOptimizer(method.server)
    pooled_test = [s.test for s in data]
    history, spent = [], {}
    for _ in range(args.rounds):
        total = {n: torch.zeros_like(t, dtype=torch.float64) for n, t in model.state_dict().items()}
        weight = 0.0
        for site in data:
            local = copy.deepcopy(model).train()  # evaluation left it in eval mode
            config = TrainConfig(
                data=ledgers,
                out=ledgers,
                model="cnn",
                image_size=32,
                epochs=args.epochs,
                batch_size=args.batch_size,
                max_physical_batch_size=64,
                lr=args.lr,
                proximal_mu=method.mu,
                progress=False,
                dp=DPConfig(
                    enabled=True,
                    epsilon=args.epsilon_per_round,
                    accountant="rdp",
                    epsilon_budget=1e6,
                    ledger=ledgers / f"{method.name}-{site.name}.jsonl",
                ),
            )
            result = fit(local, site.train, config=config, device=CPU, description="bench")
            assert result.privacy is not None
            spent[site.name] = result.privacy.dataset_spent_epsilon
            trained = result.model.state_dict()
            for name, tensor in model.state_dict().items():
                total[name] += len(site.train) * (trained[name].double() - tensor.double())
            weight += len(site.train)
        optimizer.step(model, total, weight)
        pooled = [mean_auroc(model, test, np.ones((1, len(test))))[0] for test in pooled_test]
        history.append(float(np.mean(pooled)))
    return model, history, spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patients", type=int, default=150, help="per site")
    parser.add_argument("--keep", type=float, default=0.2, help="of site k's finding-k positives")
    parser.add_argument(
        "--epsilon-per-round", type=float, default=1.3, help="6 rounds compose to ε ≈ 3"
    )
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--mu", type=float, default=0.1)
    parser.add_argument("--server-lr", type=float, default=0.03)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    methods = [
        Method("fedavg", ServerOptimizerConfig()),
        Method("fedprox", ServerOptimizerConfig(), mu=args.mu),
        Method("fedadam", ServerOptimizerConfig(name="fedadam", lr=args.server_lr)),
        Method("fedyogi", ServerOptimizerConfig(name="fedyogi", lr=args.server_lr)),
    ]
    watch, started = CpuWatch(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="primia-fedopt-") as temporary:
        root = Path(temporary)
        data = sites(root / "data", args)
        print("training images per site:", {s.name: len(s.train) for s in data})
        print("test images per site:", {s.name: len(s.test) for s in data})
        final = {}
        for method in methods:
            model, history, spent = run(method, data, args, root)
            final[method.name] = model
            rounds = " ".join(f"{a:.3f}" for a in history)
            epsilons = ", ".join(f"{site} {eps:.2f}" for site, eps in spent.items())
            print(f"{method.name:>8} pooled AUROC by round: {rounds}   ε spent: {epsilons}")
        tests = {s.name: s.test for s in data}
        counts = {
            name: resample_counts(len(test), args.resamples, args.seed)
            for name, test in tests.items()
        }
        boot = {
            m: {name: mean_auroc(model, tests[name], counts[name]) for name in tests}
            for m, model in final.items()
        }
        point = {
            m: {
                name: float(mean_auroc(model, tests[name], np.ones((1, len(tests[name]))))[0])
                for name in tests
            }
            for m, model in final.items()
        }
        print(f"\nafter {args.rounds} rounds: test mean AUROC [95 % bootstrap interval]")
        print(f"{'method':>8} " + " ".join(f"{n:>22}" for n in (*tests, "pooled (site mean)")))
        for m in final:
            cells = []
            for name in tests:
                low, high = np.nanpercentile(boot[m][name], [2.5, 97.5])
                cells.append(f"{point[m][name]:.3f} [{low:.3f}, {high:.3f}]")
            pooled = np.mean([boot[m][n] for n in tests], axis=0)
            low, high = np.nanpercentile(pooled, [2.5, 97.5])
            mean = np.mean([point[m][n] for n in tests])
            cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]")
            print(f"{m:>8} " + " ".join(f"{c:>22}" for c in cells))
        worst = min(tests, key=lambda name: point["fedavg"][name])
        print(f"\non {worst} (FedAvg's worst site), paired bootstrap difference against FedAvg:")
        for m in final:
            if m == "fedavg":
                continue
            difference = boot[m][worst] - boot["fedavg"][worst]
            low, high = np.nanpercentile(difference, [2.5, 97.5])
            p = float(np.mean(difference <= 0))
            print(
                f"{m:>8} {point[m][worst] - point['fedavg'][worst]:+.3f} "
                f"[{low:+.3f}, {high:+.3f}]  one-sided p = {p:.3f}"
            )
    share = watch.foreign_share()
    others = "n/a" if share is None else f"{share:.0%}"
    print(
        f"\n{time.perf_counter() - started:.0f} s; load average {load_average()}; "
        f"other programs used {others} of the CPUs meanwhile"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
