"""``primia anonymize train | apply | evaluate``: radiographs that keep the findings and
hide the patient."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from primia.cli.groups import print_help
from primia.cli.progress import step_progress

DESCRIPTION = """\
Anonymize radiographs before they are shared (PriCheXy-Net, Packhäuser et al. 2023): a
generator deforms each image (a smooth learned flow field, at most mu/2 of the image
side) or adds bounded learned noise, trained against a re-identification verifier while
an auxiliary classifier keeps the findings readable.
"""

TRAIN_EPILOG = """\
examples:
  primia anonymize train --data data/synth --out anon/flow --mu 0.01
  primia anonymize train --data data/synth --out anon/noise --generator noise --strength 0.1

OUT receives generator.safetensors (the generator with the lowest validation loss),
last/ (every network after the last epoch), history.jsonl and tb/ (TensorBoard). The
phases: identity pre-training of the generator, warm-up of the verifier and classifier on
real images, then adversarial training. Run the same command again to resume.
"""

APPLY_EPILOG = """\
example:
  primia anonymize apply --generator anon/flow --data data/synth --out data/synth-anon

OUT receives manifest.csv and images/: the same patients, sites, labels, sex and age,
anonymized pixels at the generator's image size; every primia loader reads it.
"""

EVALUATE_EPILOG = """\
example:
  primia anonymize evaluate --generator anon/flow --data data/synth --runs 3 --out anon/eval

Reports the linkage attack (a verifier retrained from scratch on anonymized-vs-real pairs,
judged on unseen patients; AUROC mean and std over --runs), the same attack on real
images, and the AUROC of a classifier trained on real images on the original and the
anonymized test images, with the paired difference.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    anonymize = subparsers.add_parser(
        "anonymize",
        help="train, apply and evaluate an anonymizer of radiographs",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    anonymize.set_defaults(handler=print_help(anonymize))
    commands = anonymize.add_subparsers(title="anonymize commands", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a generator against a verifier",
        description=DESCRIPTION,
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--data", type=Path, required=True, metavar="DIR")
    train.add_argument("--out", type=Path, required=True, metavar="OUT")
    train.add_argument("--generator", choices=("flow", "noise"), default="flow")
    train.add_argument("--mu", type=float, default=0.01, help="flow: deformation bound (0.01)")
    train.add_argument("--strength", type=float, default=0.1, help="noise: strength (0.1)")
    train.add_argument("--image-size", type=int, default=64, metavar="PX")
    train.add_argument("--backbone", default="resnet9", help="verifier and classifier")
    train.add_argument("--epochs", type=int, default=10, help="adversarial epochs (10)")
    train.add_argument("--pretrain-epochs", type=int, default=2)
    train.add_argument("--warmup-epochs", type=int, default=3)
    train.add_argument("--pairs-per-epoch", type=int, default=2000, metavar="N")
    train.add_argument("--privacy-weight", type=float, default=1.0)
    train.add_argument("--utility-weight", type=float, default=1.0)
    train.add_argument("--site", help="only this site's images")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.set_defaults(handler=_train)

    apply = commands.add_parser(
        "apply",
        help="write an anonymized copy of a dataset",
        description=DESCRIPTION,
        epilog=APPLY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply.add_argument(
        "--generator",
        type=Path,
        required=True,
        metavar="PATH",
        help="generator.safetensors or the folder of a training run",
    )
    apply.add_argument("--data", type=Path, required=True, metavar="DIR")
    apply.add_argument("--out", type=Path, required=True, metavar="DIR")
    apply.add_argument("--site", help="only this site's images")
    apply.add_argument("--overwrite", action="store_true")
    apply.add_argument("--device", default="auto")
    apply.set_defaults(handler=_apply)

    evaluate = commands.add_parser(
        "evaluate",
        help="linkage attack and utility",
        description=DESCRIPTION,
        epilog=EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("--generator", type=Path, required=True, metavar="PATH")
    evaluate.add_argument("--data", type=Path, required=True, metavar="DIR")
    evaluate.add_argument("--out", type=Path, metavar="DIR", help="write evaluation.json")
    evaluate.add_argument("--runs", type=int, default=3, help="linkage attacks (3)")
    evaluate.add_argument("--model", default="resnet9", help="the attacker's backbone")
    evaluate.add_argument("--epochs", type=int, default=10, help="the attacker's epochs")
    evaluate.add_argument("--classifier-epochs", type=int, default=10)
    evaluate.add_argument("--site", help="only this site's images")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(handler=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from primia.anonymize.training import AnonymizerConfig, Phase, train_anonymizer

    config = AnonymizerConfig(
        data=args.data,
        out=args.out,
        generator=args.generator,
        mu=args.mu,
        noise_strength=args.strength,
        image_size=args.image_size,
        backbone=args.backbone,
        epochs=args.epochs,
        pretrain_epochs=args.pretrain_epochs,
        warmup_epochs=args.warmup_epochs,
        pairs_per_epoch=args.pairs_per_epoch,
        privacy_weight=args.privacy_weight,
        utility_weight=args.utility_weight,
        site=args.site,
        seed=args.seed,
        device=args.device,
    )
    console = Console()
    total = config.pretrain_epochs + config.warmup_epochs + config.epochs
    with step_progress(console) as progress:
        bar = progress.add_task("anonymizer", total=total)

        def on_epoch(phase: Phase, epoch: int, epochs: int, record: dict[str, float]) -> None:
            progress.update(bar, advance=1, description=f"{phase} {epoch}/{epochs}")

        trained = train_anonymizer(config, on_epoch=on_epoch)
    console.print(
        f"generator of adversarial epoch {trained.best_epoch} (validation loss "
        f"{trained.best_validation_loss:.4f}) in {trained.generator_path}; "
        f"{trained.seconds_per_adversarial_epoch:.1f} s per adversarial epoch"
    )
    return 0


def _apply(args: argparse.Namespace) -> int:
    from primia.anonymize.apply import apply_anonymizer

    applied = apply_anonymizer(
        args.generator,
        args.data,
        args.out,
        site=args.site,
        device=args.device,
        overwrite=args.overwrite,
    )
    print(f"{applied.images} anonymized images at {applied.image_size} px in {applied.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from primia.anonymize.evaluation import evaluate_anonymizer
    from primia.audit.reid import ReidConfig

    evaluation = evaluate_anonymizer(
        args.generator,
        args.data,
        runs=args.runs,
        reid=ReidConfig(data=args.data, model=args.model, epochs=args.epochs),
        classifier_epochs=args.classifier_epochs,
        site=args.site,
        device=args.device,
        seed=args.seed,
    )
    document = evaluation.as_dict()
    mean, std = evaluation.linkage_auroc
    baseline = evaluation.baseline.auroc
    classification = document["classification"]
    print(
        f"re-identification AUROC: real images {baseline.value:.3f}; anonymized "
        f"{mean:.3f} ± {std:.3f} over {args.runs} retrained attackers"
    )
    print(
        f"classification AUROC: original {classification['original']['value']:.3f}, "
        f"anonymized {classification['anonymized']['value']:.3f} (difference "
        f"{classification['difference']['difference']:+.3f}, P = "
        f"{classification['difference']['p_value']:.3f})"
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "evaluation.json").write_text(json.dumps(document, indent=2) + "\n")
    return 0
