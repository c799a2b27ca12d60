"""HTML built from literal templates, every value escaped: the console's one way to make markup.

:func:`html` fills a template (a literal in this package's code, never data) with
values; each value is escaped with :func:`html.escape` (``& < > " '``) unless it
is already :class:`Html`, which only this module's functions make. So an app's
name, a log line or a status detail can only ever become text, in an element
or in a quoted attribute (ADR 0025). Templates quote every attribute.

Example::

    >>> str(html("<td>{name}</td>", name="<script>"))
    '<td>&lt;script&gt;</td>'
"""

from __future__ import annotations

import html as _stdlib_html
from collections.abc import Iterable


class Html(str):
    """Markup that is safe as it is: a filled template, or an escaped value."""

    __slots__ = ()


def escape(value: object) -> Html:
    """``value`` as text in HTML; :class:`Html` is kept as it is."""
    if isinstance(value, Html):
        return value
    return Html(_stdlib_html.escape(str(value), quote=True))


def html(template: str, /, **values: object) -> Html:
    """``template`` with its ``{name}`` fields replaced by the escaped ``values``."""
    return Html(template.format_map({name: escape(v) for name, v in values.items()}))


def join(parts: Iterable[Html], separator: str = "") -> Html:
    """Markup parts one after the other (each already :class:`Html`)."""
    return Html(separator.join(escape(part) for part in parts))
