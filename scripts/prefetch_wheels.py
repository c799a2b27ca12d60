"""Fetch the wheels of committed requirement locks into a wheel cache (and pip's own cache).

``make`` runs it when it installs the development environment, as it installs the other
pinned dependencies: the end-to-end test of Cosmian's data-science image
(``tests/e2e/test_cosmian_image.py``) then fetches pandas and numpy from pip's cache
rather than the network. Without the index this fails, naming what it could not fetch.

Run: ``.venv/bin/python scripts/prefetch_wheels.py CACHE_DIR LOCK...``
"""

from __future__ import annotations

import sys
from pathlib import Path

from confide.errors import Error
from confide.operator._wheels import WheelCache
from confide.runtime import read_lock


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: prefetch_wheels.py CACHE_DIR LOCK...", file=sys.stderr)
        return 2
    cache = WheelCache(Path(argv[0]))
    try:
        for name in argv[1:]:
            lock = read_lock(Path(name))
            fetched = cache.fetch(lock)
            print(f"{name}: {len(lock.requirements)} wheels cached ({fetched} fetched now)")
    except Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
