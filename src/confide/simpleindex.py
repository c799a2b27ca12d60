"""A package index's "simple" project pages (PEP 503), read within bounds.

Both the owner's ``confide deploy`` (locking an allowed sdist, ADR 0024) and the
operator (caching it by hash) read the same pages; this is the one reader.

Format, as PEP 503 specifies it and PyPI serves it: one HTML page per project at
``<index>/<normalized name>/``; each file is an anchor whose ``href`` is the
file's URL (absolute, or relative to the page), HTML-escaped, with an optional
``#<hash name>=<hex digest>`` fragment; the URL's last path segment is the file's
name. A page fetched over http(s) may name only http(s) files (an untrusted index must
not send its reader to ``file:`` URLs of the reader's machine). Only files whose fragment
is ``sha256=`` with 64 hex digits are returned:
nothing is taken from an index without a hash to check its bytes against, and
whoever uses a file checks that hash (this module only reads).

Bounds: a page is at most :data:`MAX_INDEX_PAGE` bytes, a ``href`` at most 2,000
characters, at most :data:`MAX_INDEX_FILES` files are read of a page, a fetch
times out after :data:`HTTP_TIMEOUT` seconds, and only ``http``, ``https`` and
``file`` URLs are fetched.

Example::

    >>> page = b'<a href="../../f/demo-1.0.tar.gz#sha256=' + b"ab" * 32 + b'">demo</a>'
    >>> [f.file_name for f in index_files("https://index.example/simple/demo/", page)]
    ['demo-1.0.tar.gz']
"""

from __future__ import annotations

import dataclasses
import html
import re
import typing
import urllib.parse
import urllib.request

from confide import errors

# Only modules are imported: the module's public names are exactly ``__all__``.

#: The index used when none is given: PyPI's.
DEFAULT_INDEX: typing.Final = "https://pypi.org/simple"
#: Largest project page read (bytes); PyPI's largest pages are a few MiB.
MAX_INDEX_PAGE: typing.Final = 8 * 1024 * 1024
#: Files read of one page, at most.
MAX_INDEX_FILES: typing.Final = 100_000
#: Seconds a fetch may take, at most.
HTTP_TIMEOUT: typing.Final = 120.0
#: Schemes fetched.
SCHEMES: typing.Final = ("http", "https", "file")

__all__ = [
    "DEFAULT_INDEX",
    "HTTP_TIMEOUT",
    "MAX_INDEX_FILES",
    "MAX_INDEX_PAGE",
    "SCHEMES",
    "IndexFile",
    "index_files",
    "project_files",
    "project_page_url",
    "read_url",
]

_HREF: typing.Final = re.compile(r'href="([^"]{1,2000})"')
_SHA256: typing.Final = re.compile(r"sha256=([0-9a-fA-F]{64})")


@dataclasses.dataclass(frozen=True, slots=True)
class IndexFile:
    """One file of a project page: its name, absolute URL and the SHA-256 the page gives."""

    file_name: str
    url: str
    sha256: bytes


def project_page_url(index_url: str, name: str) -> str:
    """The page of project ``name`` (already normalized) on the index at ``index_url``."""
    return f"{index_url.rstrip('/')}/{name}/"


def read_url(url: str, limit: int, *, error: type[errors.UsageError] = errors.UsageError) -> bytes:
    """``url``'s body (http, https or file), at most ``limit`` bytes; ``error`` otherwise."""
    if urllib.parse.urlsplit(url).scheme not in SCHEMES:
        raise error(f"the index URL {url[:200]} is not http(s) or file")
    request = urllib.request.Request(url, headers={"Accept": "text/html"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            body: bytes = response.read(limit + 1)
    except (OSError, ValueError) as exc:
        raise error(f"fetching {url[:200]} failed: {exc}") from None
    if len(body) > limit:
        raise error(f"{url[:200]} is larger than {limit} bytes")
    return body


def _may_link(page_url: str, file_url: str) -> bool:
    """Whether a page may send its reader to ``file_url``: an http(s) page only to http(s)
    (an index is not trusted: it must not make the operator read its own files, such as
    ``file:///dev/zero``), a ``file`` page to any scheme fetched."""
    page_scheme = urllib.parse.urlsplit(page_url).scheme
    scheme = urllib.parse.urlsplit(file_url).scheme
    if page_scheme == "file":
        return scheme in SCHEMES
    return scheme in ("http", "https")


def index_files(page_url: str, page: bytes) -> list[IndexFile]:
    """The files of a project page that carry a SHA-256, in the page's order."""
    found: list[IndexFile] = []
    text = page[:MAX_INDEX_PAGE].decode("utf-8", errors="replace")
    for href in _HREF.findall(text):
        link = html.unescape(href)
        url, _, fragment = link.partition("#")
        digest = _SHA256.fullmatch(fragment)
        if digest is None or not url:
            continue
        file_name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
        if not file_name:
            continue
        absolute = urllib.parse.urljoin(page_url, url)
        if not _may_link(page_url, absolute):
            continue
        found.append(IndexFile(file_name, absolute, bytes.fromhex(digest.group(1))))
        if len(found) >= MAX_INDEX_FILES:
            break
    return found


def project_files(
    index_url: str, name: str, *, error: type[errors.UsageError] = errors.UsageError
) -> list[IndexFile]:
    """Fetch project ``name``'s page from the index at ``index_url`` and read its files."""
    page_url = project_page_url(index_url, name)
    return index_files(page_url, read_url(page_url, MAX_INDEX_PAGE, error=error))
