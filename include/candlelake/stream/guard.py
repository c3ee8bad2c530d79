"""Refuse to start the streaming job on a checkpoint that does not belong with the data it wrote.

A Structured Streaming checkpoint remembers which Kafka offsets every micro-batch covered. Started
without it (deleted, or pointed elsewhere) while the lake and the candles already hold its output, the
job would read the topic again from the earliest retained offset: lake files are named by batch id, so
batch 0 of the new run would overwrite batch 0 of the old one, and live candles would be rebuilt from
whatever the topic still retains, replacing complete candles with partial ones. Started on an older
checkpoint (restored from a backup), it would write batch ids the lake already has. Both are refused
here, before any query starts, with what to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_BATCH_FILE = re.compile(r"^batch-(\d+)-\d+\.parquet$")


class CheckpointMismatch(RuntimeError):
    """The checkpoint and the output it is supposed to describe disagree; the message says what to do."""


@dataclass(frozen=True)
class CheckpointState:
    path: Path
    last_batch: int | None  # highest batch id with a recorded offset range; None: no checkpoint

    @property
    def exists(self) -> bool:
        return self.last_batch is not None


def checkpoint_state(path: Path) -> CheckpointState:
    """The last batch id a checkpoint planned (its `offsets/` log), or None when it has none."""
    offsets = path / "offsets"
    ids = [int(p.name) for p in offsets.iterdir() if p.name.isdigit()] if offsets.is_dir() else []
    return CheckpointState(path, max(ids) if ids else None)


def lake_last_batch(table: Path) -> int | None:
    """The highest batch id among the lake table's files, None when the table is empty."""
    highest: int | None = None
    if not table.is_dir():
        return None
    for path in table.rglob("batch-*.parquet"):
        if any(part.startswith("_") for part in path.relative_to(table).parts):
            continue  # staging and retired folders are not the table
        match = _BATCH_FILE.match(path.name)
        if match:
            batch = int(match.group(1))
            highest = batch if highest is None else max(highest, batch)
    return highest


def check_lake(table: Path, checkpoint: Path) -> None:
    """Fail when the lake holds batches its checkpoint does not account for."""
    lake_batch = lake_last_batch(table)
    if lake_batch is None:
        return
    state = checkpoint_state(checkpoint)
    if not state.exists:
        raise CheckpointMismatch(
            f"the lake {table} holds output up to micro-batch {lake_batch}, but the lake query's checkpoint "
            f"{checkpoint} is missing. Starting without it would read the topic again and overwrite the lake's "
            f"files. Restore the checkpoint folder (CANDLELAKE_CHECKPOINT_DIR), or, to start the lake over on "
            f"purpose, move {table} aside first."
        )
    if state.last_batch is not None and lake_batch > state.last_batch:
        raise CheckpointMismatch(
            f"the lake {table} holds micro-batch {lake_batch}, but the checkpoint {checkpoint} only knows "
            f"batches up to {state.last_batch}: it is older than the lake or belongs to another run. "
            f"Restore the checkpoint that wrote this lake, or move {table} aside to start over."
        )


def check_candles(live_candle_rows: int, checkpoint: Path) -> None:
    """Fail when PostgreSQL holds streamed candles but the candle query's checkpoint is missing."""
    if live_candle_rows and not checkpoint_state(checkpoint).exists:
        raise CheckpointMismatch(
            f"PostgreSQL holds {live_candle_rows} live/closed candles from the stream, but the candle query's "
            f"checkpoint {checkpoint} is missing. Starting without it would rebuild them from what the topic "
            f"still retains and could replace complete candles with partial ones. Restore the checkpoint, or "
            f"recompute those candles from the lake with the batch job and delete the streamed ones "
            f"(DELETE FROM candles WHERE state IN ('live', 'closed')) to start over on purpose."
        )
