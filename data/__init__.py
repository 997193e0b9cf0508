"""Readers, writers and the dataset registry. No models live here."""

from data.errors import DataError

__all__ = ["DataError"]
