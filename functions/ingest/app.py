"""Ingest Lambda: every /v1 route of the collector's API; the work is in the collector layer."""

from collector.api import lambda_handler

__all__ = ["lambda_handler"]
