"""Headless Chromium driven from its command line: a page's DOM, or a screenshot of it.

Chromium comes from Debian (``scripts/chromium.sh`` installs it). Each call starts
a browser with the given profile folder, loads one URL and exits; nothing is
fetched but that URL and what the page itself loads.

Screenshots for the docs: set ``CONFIDE_SCREENSHOTS=1`` when running the browser
tests and each one that takes a screenshot writes it into ``docs/screenshots/``
(:func:`save_screenshot`); without it, screenshots go to the test's own folder.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Final

import pytest

CHROMIUM: Final = Path("/usr/bin/chromium")
#: Longest a page load may take, browser start included.
BROWSER_DEADLINE: Final = 60.0
#: Where :func:`save_screenshot` writes, with ``CONFIDE_SCREENSHOTS=1``.
SCREENSHOTS: Final = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
#: The window of every screenshot (CSS pixels).
WINDOW: Final = "1100,1500"

_FLAGS: Final = (
    "--headless",
    "--no-sandbox",  # we run as root in a container: Chromium's sandbox refuses root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def _chromium(profile: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/chromium.sh (installs Debian's chromium)")
    done = subprocess.run(
        [str(CHROMIUM), *_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=BROWSER_DEADLINE,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return done


def dump_dom(url: str, profile: Path, *extra: str) -> str:
    """The page's DOM once loaded, as headless Chromium serialises it."""
    return _chromium(profile, [*extra, "--dump-dom", url]).stdout


def screenshot(url: str, profile: Path, png: Path, *extra: str, window: str = WINDOW) -> Path:
    """A PNG of the page at ``url`` in a ``window`` (``W,H``) sized window, written to ``png``."""
    png.parent.mkdir(parents=True, exist_ok=True)
    _chromium(profile, [*extra, f"--window-size={window}", f"--screenshot={png}", url])
    assert png.is_file() and png.read_bytes().startswith(b"\x89PNG"), f"no screenshot {png}"
    return png


def save_screenshot(url: str, profile: Path, name: str, tmp: Path, *extra: str) -> Path:
    """:func:`screenshot` into ``docs/screenshots/NAME.png`` when ``CONFIDE_SCREENSHOTS=1``
    (to regenerate the docs' images), else into ``tmp``."""
    folder = SCREENSHOTS if os.environ.get("CONFIDE_SCREENSHOTS") == "1" else tmp
    return screenshot(url, profile, folder / f"{name}.png", *extra)
