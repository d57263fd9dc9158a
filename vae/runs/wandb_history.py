"""What a run's local W&B files durably hold: the steps of the history records that reached the disk.

W&B writes each session of a run to ``wandb/<offline-run|run>-<time>-<id>/run-<id>.wandb``, a LevelDB-style log
(a 7-byte file header, then 32 KiB blocks of chunks, each with a CRC-32 of its type and data, holding
``wandb_internal_pb2.Record`` messages). Its writer buffers records and may lose them when the process is killed,
so what was logged is not what was kept: this reads back what was kept. A torn or corrupt chunk ends the file's
readable part, as it would for ``wandb sync``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

HEADER = b":W&B\xe1\xbe\x00"
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[bytes]:
    """The complete records of one ``.wandb`` file, up to the first torn or corrupt chunk."""
    data = path.read_bytes()
    if not data.startswith(HEADER):
        return
    pos, parts = len(HEADER), b""
    while True:
        room = BLOCK - pos % BLOCK
        if room < 7:  # a block's tail too short for a chunk header is padding
            pos += room
            continue
        if pos + 7 > len(data):
            return
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        chunk = data[pos + 7 : pos + 7 + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc or kind not in (1, 2, 3, 4):
            return
        pos += 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            parts = chunk
        else:
            parts += chunk
            if kind == LAST:
                yield parts


def session_files(wandb_dir: Path, run_id: str) -> list[Path]:
    """Every session's ``.wandb`` file of W&B run ``run_id`` under ``wandb_dir``, oldest first."""
    return sorted(wandb_dir.glob(f"*run-*-{run_id}/run-{run_id}.wandb"), key=lambda p: p.parent.name.split("-")[-2])


def durable_steps(wandb_dir: Path, run_id: str) -> list[int]:
    """The step of every history record on disk for W&B run ``run_id``, over all its sessions, in order (wandb
    is imported only where there are such files to read)."""
    files = session_files(wandb_dir, run_id)
    if not files:
        return []
    from wandb.proto import wandb_internal_pb2

    steps = []
    for path in files:
        for raw in records(path):
            # the module star-imports the classes generated for the installed protobuf, which mypy cannot see
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") == "history":
                steps.append(record.history.step.num)
    return steps
