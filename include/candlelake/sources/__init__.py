"""Sources of trades and prices: exchange adapters (WebSocket, REST), recordings, klines and the simulator.

Each adapter turns one raw payload into one canonical `Trade` (or a `Rejection` with its reason) through
`fields`, and emits `events` for the pipeline (candlelake.ingest)."""

from candlelake.sources.fields import InvalidTrade, Rejection, make_trade

__all__ = ["InvalidTrade", "Rejection", "make_trade"]
