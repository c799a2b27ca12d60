"""The operator console (``/console/``) used over HTTP as a browser would: forms and cookies.

:class:`ConsoleUser` signs in with an API token (the sign-in form's token and
cookie, ``Origin`` set as a browser sets it on a POST), then reads pages and posts
forms with the CSRF token of the page that holds them.
"""

from __future__ import annotations

import re
from typing import Final

import httpx

#: The CSRF token field of a console form.
_CSRF: Final = re.compile(r'<input type="hidden" name="csrf" value="([^"]+)">')


def csrf_of(page: str) -> str:
    """The CSRF token of the (first) form of ``page``."""
    found = _CSRF.search(page)
    if found is None:
        raise AssertionError(f"no CSRF field in the page:\n{page[:2000]}")
    return found.group(1)


class ConsoleUser:
    """One browser's cookies on one operator's console."""

    def __init__(self, api_url: str) -> None:
        self.origin = api_url
        self.http = httpx.Client(base_url=api_url, timeout=30, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ConsoleUser:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def post(
        self,
        path: str,
        fields: dict[str, str],
        *,
        origin: str | None = "null",
        fetch_site: str | None = "same-origin",
    ) -> httpx.Response:
        """A form posted as a browser posts it from a console page (under the console's
        ``Referrer-Policy: no-referrer``, Chromium sends ``Origin: null`` and
        ``Sec-Fetch-Site: same-origin``); ``origin="own"``: the console's origin;
        ``None``: no such header."""
        headers = {}
        if origin is not None:
            headers["Origin"] = self.origin if origin == "own" else origin
        if fetch_site is not None:
            headers["Sec-Fetch-Site"] = fetch_site
        return self.http.post(path, data=fields, headers=headers)

    def sign_in(self, token: str) -> httpx.Response:
        form = self.http.get("/console/sign-in")
        assert form.status_code == 200, form.text
        return self.post("/console/sign-in", {"csrf": csrf_of(form.text), "token": token})

    def signed_in(self, token: str) -> ConsoleUser:
        answer = self.sign_in(token)
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/console/"
        return self

    def page(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def submit(self, page_path: str, action: str, **fields: str) -> httpx.Response:
        """Post ``action`` with the CSRF token of the form on ``page_path``, as a user does."""
        page = self.page(page_path)
        assert page.status_code == 200, page.text
        return self.post(action, {"csrf": csrf_of(page.text), **fields})
