"""Identity export Lambda: the graph's stream in, rows under identities/ out (collector layer)."""

from collector.export_api import lambda_handler

__all__ = ["lambda_handler"]
