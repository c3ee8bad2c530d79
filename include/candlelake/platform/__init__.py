"""Installing, starting, stopping and checking the platform's parts on this machine (no Docker)."""
