"""The error Confide's cryptography raises, defined in :mod:`confide.errors`."""

from confide.errors import CryptoError

__all__ = ["CryptoError"]
