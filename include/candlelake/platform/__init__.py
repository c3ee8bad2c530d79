"""Installing, starting, stopping, checking and supervising the platform's parts on this machine (no Docker)."""
