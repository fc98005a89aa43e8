"""The table of ``primia``'s commands: each command's one-line help and the module of
:mod:`primia.cli` that registers it.

``primia --help`` and ``primia --version`` read only this table, so they start without
importing torch or the packages (under a second instead of about four); a command imports
its own module, and the packages that module needs, only when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str
    """The module of :mod:`primia.cli` whose ``register`` adds this command."""
    help: str


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "demo", "run a federation of three synthetic hospitals on this machine, with DP"
    ),
    "data": Command(
        "data", "make and inspect datasets (synthetic radiographs, public collections)"
    ),
    "train-local": Command(
        "train", "train a model on one dataset, with or without differential privacy"
    ),
    "tune": Command(
        "tune", "search DP training's hyper-parameters at a fixed ε (charges every trial's ε)"
    ),
    "ledger": Command("ledger", "verify a privacy ledger, or repair one that failed its checks"),
    "certs": Command("certs", "run the consortium's certificate authority (init, issue, list)"),
    "coordinator": Command("federation", "run a federation's coordinator"),
    "node": Command("federation", "run a data-owner node"),
    "status": Command("federation", "show a running federation's rounds, nodes and privacy spent"),
    "dashboard": Command("dashboard", "show a federation or a finished run in the browser"),
    "check": Command(
        "check", "test the link to a coordinator: certificates, integrity, throughput"
    ),
    "infer": Command("infer", "encrypted inference: serve a model, predict, or run the demo"),
    "audit": Command("audit", "privacy audits: gradient inversion, re-identification"),
    "evaluate": Command(
        "evaluate", "metrics with confidence intervals, subgroups, paired comparison of two models"
    ),
    "transfer-matrix": Command(
        "evaluate",
        "train per site and federated, with and without DP; test every model at every site",
    ),
    "anonymize": Command("anonymize", "train, apply and evaluate an anonymizer of radiographs"),
    "segment": Command("segment", "segment lungs and heart: train a segmenter, write masks"),
}


def command_help(name: str) -> str:
    """The one-line help of command ``name``."""
    return COMMANDS[name].help
