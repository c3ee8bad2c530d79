"""Reading curated candles back out: rollups to any bucket, exports, and the dashboard's market statistics."""
