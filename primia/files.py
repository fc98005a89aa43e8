"""Files written atomically: a reader (or a crash) sees the old content or the new, never half.

The bytes go to a fresh temporary file in the same folder (created with ``O_EXCL``, so
nothing planted there is reused, and with its final permissions from the first byte on),
are flushed to disk, and the file is renamed over the target (atomic on POSIX); the folder
is then synced so that the rename survives a power cut. Ledgers, checkpoints,
configurations and private keys are all written this way.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PRIVATE = 0o600
"""Readable and writable by the owner only: private keys."""


def atomic_write_bytes(path: Path, payload: bytes, *, mode: int = 0o666) -> None:
    """Write ``payload`` so that ``path`` holds either the old or the new content.

    ``mode`` is the new file's permissions before the umask (:data:`PRIVATE` for secrets).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        with open(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
