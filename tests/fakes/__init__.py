"""Fake exchanges: real WebSocket and HTTP servers on loopback that replay recorded real frames."""
