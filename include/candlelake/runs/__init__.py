"""The long-running processes and commands: the producer, replays of recorded files, backfills.

Each wires sources to the ingest sinks and runs until done or stopped; `history_chain` follows the
nightly chain a replay of old trades starts in Airflow.
"""
