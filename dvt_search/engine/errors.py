"""Errors of training that every family raises the same way (torch-free, so any family can import it)."""

from __future__ import annotations


class FitError(RuntimeError):
    """Training cannot continue (e.g. a NaN/inf loss); the message says where and why."""
