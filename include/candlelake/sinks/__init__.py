"""Writers from Spark jobs into PostgreSQL: idempotent candle upserts and streaming progress records."""
