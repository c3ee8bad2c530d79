"""Live ingestion: exchange connectors, REST clients, the gap ledger and the producer pipeline."""
