"""The error type users see: one line naming the file, line or option and what is wrong."""

from __future__ import annotations


class GraphrecError(ValueError):
    """Bad input or configuration. Command-line entry points print it as one line and exit 2."""
