"""The one reader of PEP 503 project pages (``confide.simpleindex``)."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.simpleindex import (
    MAX_INDEX_PAGE,
    IndexFile,
    index_files,
    project_files,
    project_page_url,
    read_url,
)

PAGE = "https://index.example/simple/demo/"
H = "ab" * 32


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        (
            f"../../f/demo-1.0.tar.gz#sha256={H}",
            ("demo-1.0.tar.gz", "https://index.example/f/demo-1.0.tar.gz"),
        ),
        (
            f"https://files.example/x/demo-1.0-py3-none-any.whl#sha256={H.upper()}",
            ("demo-1.0-py3-none-any.whl", "https://files.example/x/demo-1.0-py3-none-any.whl"),
        ),
        (
            f"demo%2B1.0.tar.gz?x=1&amp;y=2#sha256={H}",
            (
                "demo%2B1.0.tar.gz?x=1&y=2".replace("%2B", "+"),
                "https://index.example/simple/demo/demo%2B1.0.tar.gz?x=1&y=2",
            ),
        ),
    ],
)
def test_a_file_with_a_sha256_is_read_with_its_absolute_url(
    href: str, expected: tuple[str, str]
) -> None:
    found = index_files(PAGE, f'<a href="{href}">x</a>'.encode())
    assert [(f.file_name, f.url) for f in found] == [expected]
    assert found[0].sha256 == bytes.fromhex(H)


@pytest.mark.parametrize(
    ("why", "href"),
    [
        ("no hash", "demo-1.0.tar.gz"),
        ("another hash", f"demo-1.0.tar.gz#md5={'ab' * 16}"),
        ("a short sha256", f"demo-1.0.tar.gz#sha256={H[:-1]}"),
        ("a long sha256", f"demo-1.0.tar.gz#sha256={H}00"),
        ("not hex", f"demo-1.0.tar.gz#sha256={'zz' * 32}"),
        ("no URL", f"#sha256={H}"),
        ("a folder", f"files/#sha256={H}"),
        # Review: an index is not trusted; an https page sent the reader (the operator's
        # wheel cache, the owner's deploy) to its own machine's files.
        ("a file URL from an https page", f"file:///dev/zero#sha256={H}"),
        ("a file URL, upper case", f"FILE:///etc/hostname#sha256={H}"),
        ("an ftp URL", f"ftp://files.example/demo-1.0.tar.gz#sha256={H}"),
        ("a data URL", f"data:,demo-1.0.tar.gz#sha256={H}"),
    ],
)
def test_a_file_without_a_usable_sha256_is_not_read(why: str, href: str) -> None:
    assert index_files(PAGE, f'<a href="{href}">x</a>'.encode()) == [], why


def test_the_page_is_read_in_order_and_only_up_to_its_bound() -> None:
    links = "".join(f'<a href="demo-{i}.tar.gz#sha256={H}">x</a>' for i in range(3))
    names = [f.file_name for f in index_files(PAGE, links.encode())]
    assert names == ["demo-0.tar.gz", "demo-1.tar.gz", "demo-2.tar.gz"]
    past_bound = b" " * MAX_INDEX_PAGE + f'<a href="late.tar.gz#sha256={H}">'.encode()
    assert index_files(PAGE, past_bound) == []


def test_project_files_fetches_the_project_page(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "index.html").write_text(f'<a href="demo-1.0.tar.gz#sha256={H}">')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            index = f"http://127.0.0.1:{server.server_address[1]}/"
            assert project_page_url(index, "demo") == f"{index}demo/"
            assert project_files(index, "demo") == [
                IndexFile("demo-1.0.tar.gz", f"{index}demo/demo-1.0.tar.gz", bytes.fromhex(H))
            ]
        finally:
            server.shutdown()


class _Refused(UsageError):
    code = "test.refused"


@pytest.mark.parametrize(
    ("why", "url", "limit", "message"),
    [
        ("scheme", "ftp://index.example/simple/", 10, r"is not http\(s\) or file"),
        ("missing", "file:///nonexistent/confide/page", 10, "failed"),
        ("too large", None, 3, "is larger than 3 bytes"),
    ],
)
def test_read_url_refuses_with_the_callers_error(
    tmp_path: Path, why: str, url: str | None, limit: int, message: str
) -> None:
    page = tmp_path / "page"
    page.write_bytes(b"four")
    with pytest.raises(_Refused, match=message):
        read_url(url or page.as_uri(), limit, error=_Refused)
    assert read_url(page.as_uri(), 4) == b"four"


def test_a_local_page_may_name_local_files() -> None:
    """Guard for the rows above: a ``file`` index (a local mirror) still links its files."""
    found = index_files("file:///srv/simple/demo/", f'<a href="x.tar.gz#sha256={H}">'.encode())
    assert [f.url for f in found] == ["file:///srv/simple/demo/x.tar.gz"]
