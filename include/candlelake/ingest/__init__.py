"""The producer's path to Kafka: the pipeline (dedupe, gap tracking, coverage), its sinks and its heartbeat.

Everything a source emits passes `pipeline.Pipeline`; trades leave through `kafka_sinks`, rejections
through `dead_letter`, id holes into the `gaps` ledger and are filled by `gap_fill`; `counters` and
`health_reporter` say what the producer did.
"""
