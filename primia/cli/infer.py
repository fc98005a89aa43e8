"""``primia infer``: encrypted inference with CrypTen (model owner, data owner, crypto provider)."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from primia.cli.commands import command_help
from primia.cli.groups import print_help

if TYPE_CHECKING:  # the inference modules load only when a command needs them
    from primia.rpc.inference_server import InferenceServer

DESCRIPTION = """\
Predict on a radiograph with a model the data owner never sees, without the model owner
seeing the radiograph. Three parties, usually on three machines:

  crypto provider   primia infer crypto-provider --config crypto-provider.toml
                    deals CrypTen's correlated randomness (the TTP); learns nothing
  model owner       primia infer serve --model RUN_DIR --config model-owner.toml
                    serves the model: secret-shares its weights into each session
  data owner        primia infer predict --config data-owner.toml --image x.png
                    secret-shares its images; only it learns the probabilities

Try all three on this machine: primia infer demo   (after `primia demo` trained a model)
docs/inference.md explains the configuration files, the ports and the network.
"""

PREDICT_EPILOG = """\
Images must be grey PNG, JPEG or TIFF files of the model's input size (`primia infer
predict --describe` shows it); --fit converts and resizes them as the training loaders do.
Probabilities are printed and written to --out (JSON). Up to the server's max_batch images
go into one session.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    infer = subparsers.add_parser(
        "infer",
        help=command_help("infer"),
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    infer.set_defaults(handler=print_help(infer))
    commands = infer.add_subparsers(title="infer commands", metavar="COMMAND")

    dealer = commands.add_parser(
        "crypto-provider",
        help="run the crypto provider (CrypTen's trusted dealer)",
        description="Serve model owners' requests to deal for their sessions, each session "
        "in a process of its own. It sees only random values, never images or weights.",
    )
    _add_config(dealer, "the crypto provider's configuration file (docs/inference.md)")
    dealer.set_defaults(handler=_crypto_provider)

    serve = commands.add_parser(
        "serve",
        help="serve a model to data owners, encrypted",
        description="Serve a trained model: a data owner opens a session over gRPC (mutual "
        "TLS) and the model runs on its secret-shared images, with secret-shared weights.",
    )
    serve.add_argument(
        "--model",
        type=Path,
        required=True,
        metavar="PATH",
        help="a .safetensors checkpoint, a run directory or a `primia demo` folder",
    )
    _add_config(serve, "the model owner's configuration file (docs/inference.md)")
    serve.set_defaults(handler=_serve)

    predict = commands.add_parser(
        "predict",
        help="get class probabilities for images from a served model",
        description="Open a session with a model owner and get the class probabilities of "
        "your images; neither the model owner nor the crypto provider sees them.",
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config(predict, "the data owner's configuration file (docs/inference.md)")
    predict.add_argument("--image", type=Path, nargs="+", metavar="FILE", help="image files")
    predict.add_argument(
        "--fit", action="store_true", help="convert to grey and resize/crop to the model's size"
    )
    predict.add_argument(
        "--out", type=Path, default=Path("predictions.json"), help="JSON output file"
    )
    predict.add_argument(
        "--describe", action="store_true", help="only show the served model's public description"
    )
    predict.set_defaults(handler=_predict)

    demo = commands.add_parser(
        "demo",
        help="all three parties on this machine, encrypted vs plaintext",
        description="Start a crypto provider and a model owner as separate processes, "
        "predict on synthetic radiographs as the data owner, and compare the encrypted "
        "probabilities with the plaintext model's.",
        epilog="""\
examples:
  primia demo && primia infer demo               the demo's model, 4 radiographs
  primia infer demo --model runs/local --images 8 --out runs/infer-local
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--model",
        type=Path,
        default=Path("runs/demo"),
        metavar="PATH",
        help="the trained model (default runs/demo, made by `primia demo`)",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/infer-demo"), help="demo folder")
    demo.add_argument("--images", type=int, default=4, help="radiographs to predict (default 4)")
    demo.set_defaults(handler=_demo)


def _add_config(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--config", type=Path, required=True, metavar="TOML", help=text)


def _crypto_provider(args: argparse.Namespace) -> int:
    from primia.inference.party_config import load_crypto_provider_config
    from primia.rpc.inference_server import crypto_provider_server

    return _run_server(crypto_provider_server(load_crypto_provider_config(args.config)))


def _serve(args: argparse.Namespace) -> int:
    from primia.inference.party_config import load_model_owner_config
    from primia.rpc.inference_server import model_owner_server

    return _run_server(model_owner_server(load_model_owner_config(args.config), args.model))


def _run_server(server: InferenceServer) -> int:
    def request_stop(signum: int, frame: FrameType | None) -> None:
        server.request_stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.start()
    try:
        server.wait()
    finally:
        server.stop()
    return 0


def _predict(args: argparse.Namespace) -> int:
    from primia.errors import ConfigError
    from primia.inference.inputs import load_images, output_names
    from primia.inference.party_config import load_data_owner_config
    from primia.rpc.inference_client import describe_model, predict

    config = load_data_owner_config(args.config)
    served = describe_model(config)
    spec = served.spec
    if args.describe:
        print(
            f"{spec.architecture} (width {spec.width or 'default'}), {spec.in_channels} channel(s) "
            f"at {spec.image_size}×{spec.image_size}, {spec.task}, outputs: "
            f"{', '.join(spec.label_names) or spec.num_outputs}; up to {served.max_batch} "
            "images per session"
        )
        return 0
    if not args.image:
        raise ConfigError("give the images to predict: --image FILE [FILE ...]")
    if len(args.image) > served.max_batch:
        raise ConfigError(
            f"the server takes up to {served.max_batch} images per session, got "
            f"{len(args.image)}; run predict on smaller groups"
        )
    images = load_images(args.image, spec, fit=args.fit)
    console = Console()
    with console.status(f"encrypted inference on {len(args.image)} image(s)..."):
        prediction = predict(images, config, served=served)
    labels = output_names(spec)
    table = Table(title=f"class probabilities ({prediction.seconds:.1f} s, encrypted)")
    table.add_column("image")
    for label in labels:
        table.add_column(label, justify="right")
    rows = []
    for path, row in zip(args.image, prediction.probabilities.tolist(), strict=True):
        table.add_row(str(path), *(f"{value:.3f}" for value in row))
        rows.append({"image": str(path), "probabilities": dict(zip(labels, row, strict=True))})
    console.print(table)
    document = {"session": prediction.session_id, "seconds": prediction.seconds, "images": rows}
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from primia.demo.inference import run_inference_demo

    console = Console()
    with console.status("starting the crypto provider and the model owner, then predicting..."):
        result = run_inference_demo(args.model, args.out, images=args.images)
    table = Table(title="encrypted vs plaintext probabilities")
    table.add_column("image")
    for label in result.label_names:
        table.add_column(label, justify="right")
    for index, (encrypted, plain) in enumerate(
        zip(result.encrypted.tolist(), result.plaintext.tolist(), strict=True)
    ):
        table.add_row(
            f"image-{index}.png",
            *(f"{e:.3f} / {p:.3f}" for e, p in zip(encrypted, plain, strict=True)),
        )
    console.print(table)
    console.print(
        f"largest difference {result.max_difference:.2e}; the data owner waited "
        f"{result.seconds:.1f} s (incl. starting the session's processes). "
        f"Files in {result.out}"
    )
    return 0
