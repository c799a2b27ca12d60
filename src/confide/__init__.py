"""Confide: run confidential Python web apps in hardware enclaves, and verify what runs there."""

__all__ = ["__version__"]

__version__ = "0.1.0"
