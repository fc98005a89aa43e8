"""``primia anonymize train | apply | evaluate``: radiographs that keep the findings and
hide the patient."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from primia.anonymize.pseudonyms import DROPPABLE
from primia.cli.commands import command_help
from primia.cli.groups import add_threads_option, print_help
from primia.cli.progress import step_progress

DESCRIPTION = """\
Anonymize radiographs before they are shared (PriCheXy-Net, Packhäuser et al. 2023): a
generator deforms each image (a smooth learned flow field, at most mu/2 of the image
side) or adds bounded learned noise, trained against a re-identification verifier while
an auxiliary classifier keeps the findings readable.
"""

TRAIN_DESCRIPTION = (
    DESCRIPTION
    + """
'train' trains such a generator on a dataset with patient IDs (two or more images of
some patients), in three phases; see below.
"""
)

APPLY_DESCRIPTION = """\
Write an anonymized copy of a dataset, meant to leave the hospital: every image through a
trained generator, and a manifest without the original patient IDs. Each patient_id is
replaced by a keyed pseudonym (HMAC-SHA256 under a key kept at the hospital: --id-key, by
default OUT.id-key beside the copy, created if absent; the same key gives the same
pseudonyms in every copy). Ages can be coarsened into bands and site, sex, age or view
dropped. The command prints what the copy keeps, and OUT/anonymization.json records it.
"""

EVALUATE_DESCRIPTION = """\
Measure what a trained generator achieves: how well a re-identification attacker,
retrained on anonymized images, still links them to the real images of their patients,
and what anonymization costs a classifier of the findings.
"""

TRAIN_EPILOG = """\
examples:
  primia anonymize train --data data/synth --out anon/flow --mu 0.01
  primia anonymize train --data data/synth --out anon/noise --generator noise --strength 0.1
  primia segment train --data data/synth --out seg        (data synth --masks)
  primia anonymize train --data data/synth --out anon/seg --mu 0.2 --guide segmenter \
      --segmenter seg --inside 0 0

OUT receives generator.safetensors (the generator with the lowest validation loss),
last/ (every network after the last epoch), history.jsonl and tb/ (TensorBoard). The
phases: identity pre-training of the generator, warm-up of the verifier and classifier on
real images, then adversarial training. Run the same command again to resume.
"""

APPLY_EPILOG = """\
examples:
  primia anonymize apply --generator anon/flow --data data/synth --out data/synth-anon
  primia anonymize apply --generator anon/flow --data data/synth --out data/synth-anon \\
      --id-key keys/synth.id-key --age-band 10 --drop sex

OUT receives manifest.csv, images/ and anonymization.json: pseudonymized patients, the
labels, the demographics kept, anonymized pixels at the generator's image size; every
primia loader reads it. Send OUT, never the key.
"""

EVALUATE_EPILOG = """\
examples:
  primia anonymize evaluate --generator anon/flow --data data/synth --runs 3 --out anon/eval
  primia anonymize evaluate --generator anon/seg-0.1 anon/seg-0.2 anon/seg-0.4 \
      --data data/synth --runs 3 --out anon/curve

Reports the linkage attack (a verifier retrained from scratch on anonymized-vs-real pairs,
judged on unseen patients; AUROC mean and std over --runs), the same attack on real
images, and the AUROC of a classifier trained on real images on the original and the
anonymized test images, with the paired difference. With several generators (strengths),
the privacy-utility curve: OUT/curve.png and OUT/report.html plot linkage AUROC against
classification AUROC, with the unanonymized point and PriCheXy-Net's published point.
A lower AUROC of this attacker is not anonymity.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    anonymize = subparsers.add_parser(
        "anonymize",
        help=command_help("anonymize"),
        description=DESCRIPTION,  # the group's page: what anonymization is
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    anonymize.set_defaults(handler=print_help(anonymize))
    commands = anonymize.add_subparsers(title="anonymize commands", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a generator against a verifier",
        description=TRAIN_DESCRIPTION,
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "--data", type=Path, required=True, metavar="DIR", help="a dataset with patient IDs"
    )
    train.add_argument(
        "--out", type=Path, required=True, metavar="OUT", help="the run's folder (resumed)"
    )
    train.add_argument(
        "--generator",
        choices=("flow", "noise"),
        default="flow",
        help="flow: a smooth deformation field; noise: bounded additive noise (default flow)",
    )
    train.add_argument(
        "--mu",
        type=float,
        default=0.01,
        help="flow: deformation bound, a pixel moves at most mu/2 of the side (default 0.01)",
    )
    train.add_argument(
        "--strength", type=float, default=0.1, help="noise: largest pixel change (default 0.1)"
    )
    train.add_argument(
        "--guide",
        choices=("none", "masks", "segmenter"),
        default="none",
        help="keep the lungs and heart (nearly) unaltered, deform the rest: masks from the "
        "manifest's mask columns, or from --segmenter (default none: the whole image)",
    )
    train.add_argument(
        "--inside",
        type=float,
        nargs=2,
        default=(0.0, 0.0),
        metavar=("LUNGS", "HEART"),
        help="guided: strength inside the lungs and the heart, 0 (untouched) to 1 (default 0 0)",
    )
    train.add_argument(
        "--segmenter",
        type=Path,
        metavar="PATH",
        help="with --guide segmenter: a checkpoint of 'primia segment train' (stored, frozen, "
        "in the generator's file)",
    )
    train.add_argument(
        "--image-size", type=int, default=64, metavar="PX", help="image side (default 64)"
    )
    train.add_argument(
        "--backbone",
        default="resnet9",
        help="architecture of the verifier and the classifier (default resnet9)",
    )
    train.add_argument("--epochs", type=int, default=10, help="adversarial epochs (default 10)")
    train.add_argument(
        "--pretrain-epochs",
        type=int,
        default=2,
        metavar="N",
        help="identity pre-training of the generator (default 2)",
    )
    train.add_argument(
        "--warmup-epochs",
        type=int,
        default=3,
        metavar="N",
        help="verifier and classifier on real images before the adversarial phase (default 3)",
    )
    train.add_argument(
        "--pairs-per-epoch",
        type=int,
        default=2000,
        metavar="N",
        help="image pairs drawn afresh each epoch (default 2000)",
    )
    train.add_argument(
        "--privacy-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="weight of the verifier's loss in the generator's objective (default 1)",
    )
    train.add_argument(
        "--utility-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="weight of the classifier's loss in the generator's objective (default 1)",
    )
    _add_run_options(train)
    train.set_defaults(handler=_train)

    apply = commands.add_parser(
        "apply",
        help="write an anonymized, pseudonymized copy of a dataset",
        description=APPLY_DESCRIPTION,
        epilog=APPLY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_generator_option(apply)
    apply.add_argument(
        "--data", type=Path, required=True, metavar="DIR", help="the dataset to copy"
    )
    apply.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="the anonymized copy's folder"
    )
    apply.add_argument(
        "--id-key",
        type=Path,
        metavar="PATH",
        help="the hospital's pseudonymization key, created if absent; keep it, and keep it "
        "out of the copy (default: OUT.id-key beside OUT)",
    )
    apply.add_argument(
        "--age-band",
        type=int,
        metavar="YEARS",
        help="write ages as bands of this many years (40-49), 90+ top-coded (default: exact)",
    )
    apply.add_argument(
        "--drop",
        nargs="+",
        choices=DROPPABLE,
        default=[],
        metavar="COLUMN",
        help=f"leave these columns out of the copy: {', '.join(DROPPABLE)}",
    )
    apply.add_argument("--overwrite", action="store_true", help="replace a copy already in OUT")
    _add_run_options(apply, seed=False)
    apply.set_defaults(handler=_apply)

    evaluate = commands.add_parser(
        "evaluate",
        help="linkage attack and utility of a trained generator",
        description=EVALUATE_DESCRIPTION,
        epilog=EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument(
        "--generator",
        type=Path,
        nargs="+",
        required=True,
        metavar="PATH",
        help="one or more generators (e.g. one per strength, of one image size): each is a "
        "point of the privacy-utility curve",
    )
    evaluate.add_argument(
        "--data", type=Path, required=True, metavar="DIR", help="a dataset with patient IDs"
    )
    evaluate.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write evaluation.json, curve.png and report.html",
    )
    evaluate.add_argument("--runs", type=int, default=3, help="linkage attacks (3)")
    evaluate.add_argument("--model", default="resnet9", help="the attacker's backbone")
    evaluate.add_argument("--epochs", type=int, default=10, help="the attacker's epochs")
    evaluate.add_argument(
        "--classifier-epochs",
        type=int,
        default=10,
        metavar="N",
        help="epochs of the classifier of the findings (default 10)",
    )
    _add_run_options(evaluate)
    evaluate.set_defaults(handler=_evaluate)


def _add_generator_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--generator",
        type=Path,
        required=True,
        metavar="PATH",
        help="generator.safetensors or the folder of a training run",
    )


def _add_run_options(parser: argparse.ArgumentParser, *, seed: bool = True) -> None:
    """``--site``, ``--seed`` (where randomness is drawn), ``--device`` and ``--threads``."""
    parser.add_argument("--site", help="only this site's images")
    if seed:
        parser.add_argument(
            "--seed", type=int, default=0, help="seed of splits, pairs and weights (default 0)"
        )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)"
    )
    add_threads_option(parser)


def _train(args: argparse.Namespace) -> int:
    from primia.anonymize.training import AnonymizerConfig, Phase, train_anonymizer

    config = AnonymizerConfig(
        data=args.data,
        out=args.out,
        generator=args.generator,
        mu=args.mu,
        noise_strength=args.strength,
        guide=args.guide,
        inside=tuple(args.inside),
        segmenter=args.segmenter,
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
    from primia.anonymize.pseudonyms import Deidentification

    applied = apply_anonymizer(
        args.generator,
        args.data,
        args.out,
        site=args.site,
        device=args.device,
        overwrite=args.overwrite,
        deidentification=Deidentification(
            id_key=args.id_key, age_band=args.age_band, drop=frozenset(args.drop)
        ),
    )
    print(f"{applied.images} anonymized images at {applied.image_size} px in {applied.out}")
    print("the copy holds:")
    for column, treatment in applied.columns.items():
        print(f"  {column:<10} {treatment}")
    print(
        f"pseudonymization key: {applied.key} (keep it at the hospital; it links "
        "pseudonyms back to patient IDs)"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from primia.anonymize.evaluation import evaluate_curve
    from primia.anonymize.report import NOT_ANONYMITY, verdict, write_anonymization_report
    from primia.audit.reid import ReidConfig

    curve = evaluate_curve(
        args.generator,
        args.data,
        runs=args.runs,
        reid=ReidConfig(data=args.data, model=args.model, epochs=args.epochs),
        classifier_epochs=args.classifier_epochs,
        site=args.site,
        device=args.device,
        seed=args.seed,
    )
    baseline = curve.baseline.auroc.value
    original = curve.original.overall.estimate("auroc").value
    print(
        f"unanonymized: re-identification AUROC {baseline:.3f}, classification AUROC {original:.3f}"
    )
    for point in curve.points:
        mean, std = point.linkage_auroc
        difference = point.utility.groups["all"].as_dict()["auroc"]["mean"]
        p_value = "n/a" if difference["p_value"] is None else f"{difference['p_value']:.3f}"
        print(
            f"{point.label}: re-identification AUROC {mean:.3f} ± {std:.3f} over {args.runs} "
            f"retrained attackers; classification AUROC {point.classification_auroc:.3f} "
            f"(difference {difference['difference']:+.3f}, P = {p_value})"
        )
    print(verdict(curve))
    print(NOT_ANONYMITY)
    if args.out is not None:
        files = write_anonymization_report(curve, args.out)
        print(f"report: {files.html}; curve: {files.png}; figures: {files.json}")
    return 0
