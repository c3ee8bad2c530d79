"""Producer entry point: stream trades from a source into Kafka until stopped (SIGTERM flushes).

    python jobs/produce.py --source simulator --symbols BTCUSDT,ETHUSDT --rate 50

`candlelake produce` runs the same code.
"""

from __future__ import annotations

import sys

from candlelake.cli import main

if __name__ == "__main__":
    sys.exit(main(["produce", *sys.argv[1:]]))
