"""Scorer entry point: closed candles and prices into alerts until stopped (SIGTERM ends the poll loop).

    python jobs/score_anomalies.py

`candlelake score` runs the same code; the `scorer` platform part starts this file.
"""

from __future__ import annotations

import sys

from candlelake.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
