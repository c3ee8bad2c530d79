"""candlelake: live cryptocurrency trades into exchange-exact OHLCV candles, kept correct."""

__version__ = "0.1.0"
