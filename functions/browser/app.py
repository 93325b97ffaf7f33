"""Browser Lambda: analytics.js's routes on the HTTP API door; the work is in the layer."""

from collector.browser_api import lambda_handler

__all__ = ["lambda_handler"]
