from pathlib import Path

import pytest

from candlelake.stream.guard import CheckpointMismatch, check_candles, check_lake, lake_last_batch

pytestmark = pytest.mark.unit


def lake_file(table: Path, batch: int, partition: str = "exchange=binance/trade_date=2026-11-22") -> None:
    folder = table / partition
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"batch-{batch:012d}-0000.parquet").write_bytes(b"PAR1")


def checkpoint(path: Path, *batches: int) -> Path:
    (path / "offsets").mkdir(parents=True, exist_ok=True)
    for batch in batches:
        (path / "offsets" / str(batch)).write_text("v1\n")
    return path


def test_an_empty_lake_starts_with_or_without_a_checkpoint(tmp_path: Path) -> None:
    check_lake(tmp_path / "trades", tmp_path / "cp-missing")
    check_lake(tmp_path / "trades", checkpoint(tmp_path / "cp", 0, 1))


def test_the_lake_s_last_batch_ignores_staging_and_other_files(tmp_path: Path) -> None:
    table = tmp_path / "trades"
    lake_file(table, 3)
    lake_file(table, 12, "exchange=coinbase/trade_date=2026-11-21")
    lake_file(table, 99, "_staging/batch=99")
    (table / "exchange=binance" / "notes.txt").write_text("x")
    assert lake_last_batch(table) == 12


def test_a_missing_checkpoint_with_lake_output_is_refused_with_what_to_do(tmp_path: Path) -> None:
    lake_file(tmp_path / "trades", 5)
    with pytest.raises(CheckpointMismatch, match=r"checkpoint .* is missing.*Restore the checkpoint folder"):
        check_lake(tmp_path / "trades", tmp_path / "cp")
    # A checkpoint folder that exists but never planned a batch is as good as missing.
    (tmp_path / "cp").mkdir()
    with pytest.raises(CheckpointMismatch):
        check_lake(tmp_path / "trades", tmp_path / "cp")


def test_an_older_checkpoint_than_the_lake_is_refused(tmp_path: Path) -> None:
    lake_file(tmp_path / "trades", 7)
    with pytest.raises(CheckpointMismatch, match="only knows batches up to 4"):
        check_lake(tmp_path / "trades", checkpoint(tmp_path / "cp", 3, 4))


def test_the_checkpoint_that_wrote_the_lake_is_accepted_even_mid_batch(tmp_path: Path) -> None:
    lake_file(tmp_path / "trades", 7)
    check_lake(tmp_path / "trades", checkpoint(tmp_path / "cp", 6, 7))  # batch 7 replays onto its own files
    check_lake(tmp_path / "trades", checkpoint(tmp_path / "cp2", 7, 8))  # batch 8 planned, not yet written


def test_streamed_candles_without_their_checkpoint_are_refused(tmp_path: Path) -> None:
    check_candles(0, tmp_path / "cp")
    check_candles(10, checkpoint(tmp_path / "cp-ok", 0))
    with pytest.raises(CheckpointMismatch, match="10 live/closed candles"):
        check_candles(10, tmp_path / "cp")
