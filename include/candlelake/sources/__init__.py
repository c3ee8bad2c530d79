"""Exchange adapters: each turns one raw payload into one canonical `Trade`, through `validate`."""

from candlelake.sources.fields import InvalidTrade, Rejection, make_trade

__all__ = ["InvalidTrade", "Rejection", "make_trade"]
