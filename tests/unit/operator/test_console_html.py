"""The console's HTML helper and its server-sent events: whatever the words, they stay text."""

from __future__ import annotations

from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st

from confide.operator._console._app import _event
from confide.operator._console._html import Html, escape, html, join


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(markup: str) -> _Collect:
    parser = _Collect()
    parser.feed(markup)
    parser.close()
    return parser


@given(st.text(), st.text())
def test_any_value_is_text_in_an_element_and_in_an_attribute(word: str, other: str) -> None:
    page = html('<p title="{a}">{b}</p>', a=other, b=word)
    parsed = _parse(page)
    assert parsed.tags == [("p", [("title", other)])]
    assert "".join(parsed.text) == word


def test_examples() -> None:
    assert html("<td>{name}</td>", name="<script>") == "<td>&lt;script&gt;</td>"
    assert escape("\"'&") == "&quot;&#x27;&amp;"
    # Markup made by the helper is kept; a plain str is escaped even inside join.
    assert html("<p>{x}</p>", x=html("<b>{y}</b>", y="<i>")) == "<p><b>&lt;i&gt;</b></p>"
    assert join([Html("<br>"), "<br>"]) == "<br>&lt;br&gt;"  # type: ignore[list-item]


@given(st.lists(st.text().filter(lambda t: "\n" not in t), min_size=1))
def test_log_lines_round_trip_through_an_event(lines: list[str]) -> None:
    raw = "".join(f"{line}\n" for line in lines).encode()
    event = _event(raw, 7).decode()
    assert event.endswith("\n\n")
    fields = event[:-2].split("\n")
    assert fields[0] == "id: 7"
    # An EventSource joins the data lines with "\n": the lines, with \r taken out (a
    # line end to SSE) and no other way to end an event early.
    data = [f.removeprefix("data: ") for f in fields[1:]]
    assert all(f.startswith("data: ") for f in fields[1:])
    got = "\n".join(data)
    want = "\n".join(lines).replace("\r", "")
    assert got == want
