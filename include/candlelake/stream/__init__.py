"""The streaming job's sinks and bookkeeping: the Parquet lake, the candle upsert, progress and the checkpoint guard."""
