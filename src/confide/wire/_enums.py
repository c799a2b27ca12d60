"""The words an app's status, desired state and TLS mode are spelled with on every wire."""

from __future__ import annotations

import enum
from typing import Final


class AppStatus(enum.StrEnum):
    """Where an app is in its life (the operator's column and its API's word)."""

    SPAWNING = "spawning"
    INITIALIZING = "initializing"
    RUNNING = "running"
    STOPPED = "stopped"
    ON_ERROR = "on_error"
    EXPIRED = "expired"
    DELETED = "deleted"

    @property
    def active(self) -> bool:
        """A runtime exists or is about to (its logs can still grow)."""
        return self in (AppStatus.SPAWNING, AppStatus.INITIALIZING, AppStatus.RUNNING)


class DesiredState(enum.StrEnum):
    """What the owner asked for; the supervisor converges on it."""

    RUN = "run"
    STOP = "stop"


class TlsMode(enum.StrEnum):
    """Who terminates an app's TLS, in the operator API's words.

    :attr:`launch` is the word the launch manifest measures for the mode
    (``ratls``, ``certificate``, ``none``); :meth:`from_launch` reads it back.
    """

    #: Zero trust: the enclave serves an RA-TLS certificate carrying its quote.
    RATLS = "ratls"
    #: The owner's certificate; its private key goes only into the attested enclave.
    OWNER = "owner"
    #: Plain HTTP inside, TLS terminated by the operator's router (trust the operator).
    OPERATOR = "operator"

    @property
    def launch(self) -> str:
        """The mode's word in the launch manifest (and its ``confide runtime`` option)."""
        return _LAUNCH_WORDS[self]

    @classmethod
    def from_launch(cls, word: object) -> TlsMode:
        """The mode a launch manifest's ``tls`` word names; ``ValueError`` for another."""
        for mode, launch in _LAUNCH_WORDS.items():
            if launch == word:
                return mode
        raise ValueError(f"{word!r} is not a launch TLS mode ({', '.join(_LAUNCH_WORDS.values())})")


_LAUNCH_WORDS: Final = {
    TlsMode.RATLS: "ratls",
    TlsMode.OWNER: "certificate",
    TlsMode.OPERATOR: "none",
}
