"""A training process killed mid-run leaves its full planned ε in the ledger."""

import shutil
import signal
import subprocess
import sys
import time

import pytest

from primia.train import PrivacyLedger


@pytest.mark.slow
def test_sigkill_mid_training_over_reports_never_under(synth_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "primia", "train-local", "--data", str(data)]
    command += ["--out", str(out), "--model", "cnn", "--width", "4", "--image-size", "32"]
    command += ["--batch-size", "8", "--epochs", "200", "--dp", "--epsilon", "2"]
    command += ["--no-progress", "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists():  # wait for the first finished epoch
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "training never finished an epoch"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    ledger = PrivacyLedger.open(data / "privacy-ledger.jsonl")
    (release,) = ledger.releases()
    assert not release.completed
    # The planned 200 epochs were reserved, not the one epoch that ran.
    epochs_reserved = release.mechanism.steps * release.mechanism.sample_rate
    assert epochs_reserved == pytest.approx(200)
    assert ledger.spent_epsilon() == pytest.approx(2.0, abs=0.02)
