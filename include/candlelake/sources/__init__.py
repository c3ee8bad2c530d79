"""Exchange adapters: each turns one raw payload into one canonical `Trade`, through `validate`."""

from candlelake.sources.validate import InvalidTrade, Rejection, make_trade

__all__ = ["InvalidTrade", "Rejection", "make_trade"]
