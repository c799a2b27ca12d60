"""Types of the compiled relay loop (``_relaycore.c``; ADR 0028)."""

from typing import Final, final

MIN_CHUNK: Final[int]
MAX_CHUNK: Final[int]
CLOSED_END: Final[int]
CLOSED_ABORTED: Final[int]
CLOSED_IDLE: Final[int]
CLOSED_READ: Final[int]
CLOSED_WRITE: Final[int]
CLOSED_HALF_CLOSE: Final[int]
CLOSED_STOPPING: Final[int]

@final
class Pair:
    def buffered(self) -> int: ...

@final
class Core:
    def __init__(self, chunk: int, idle_timeout: float, wake_fd: int) -> None: ...
    def add(self, client_fd: int, upstream_fd: int, /) -> Pair: ...
    def abort(self, pair: Pair, /) -> bool: ...
    def run(self) -> tuple[bool, list[tuple[Pair, int, int]]]: ...
    def close_all(self) -> list[tuple[Pair, int, int]]: ...
    def close(self) -> None: ...
    def live(self) -> int: ...
