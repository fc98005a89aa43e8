"""Run the transfer matrix as a coordinator: serve the nodes, train, evaluate, report.

>>> result = run_transfer_matrix(config, TransferSettings(out=Path("transfer")))
... # doctest: +SKIP
>>> result.files.html                                                # doctest: +SKIP
PosixPath('transfer/report.html')

The nodes are the federation's (``primia node serve`` at each site, dialling this
coordinator); the matrix needs all of them. See :mod:`primia.transfer.matrix`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from primia.federated.coordinator_config import CoordinatorConfig
from primia.federated.registry import NodeRegistry
from primia.rpc.coordinator_server import CoordinatorServer
from primia.transfer.analysis import analyse
from primia.transfer.matrix import ProgressCallback, TransferMatrix, TransferSettings, summary_of
from primia.transfer.report import MatrixFiles, write_matrix_report


@dataclass(frozen=True)
class TransferResult:
    analysis: dict[str, Any]
    files: MatrixFiles
    timings: dict[str, float]


def run_transfer_matrix(
    config: CoordinatorConfig,
    settings: TransferSettings,
    *,
    stop: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    server: CoordinatorServer | None = None,
) -> TransferResult:
    """Serve on ``config.listen`` (or use a started ``server`` built by
    :func:`transfer_server`), run the matrix to its end and write its report."""
    if server is None:
        server = transfer_server(config, settings, stop=stop, on_progress=on_progress)
    matrix = server.job
    assert isinstance(matrix, TransferMatrix)
    cells = server.run()
    analysis = analyse(matrix.models, matrix.sites, cells)
    files = write_matrix_report(
        settings.out,
        summary=summary_of(matrix),
        analysis=analysis,
        models=matrix.models,
        cells=cells,
        timings=matrix.timings,
    )
    return TransferResult(analysis=analysis, files=files, timings=matrix.timings)


def transfer_server(
    config: CoordinatorConfig,
    settings: TransferSettings,
    *,
    stop: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
) -> CoordinatorServer:
    """A coordinator server whose job is the matrix (not yet listening: call ``start``)."""

    def job(registry: NodeRegistry) -> TransferMatrix:
        return TransferMatrix(config, settings, registry, stop=stop, on_progress=on_progress)

    return CoordinatorServer(config, stop=stop, job=job)
