"""What a reader sees of an HTML document, for the tests of the built book (tests/test_book.py) and
of the tables the notebook helpers make (tests/test_notebooks.py): `Page`, the tags, ids and visible
text of a document, and `FILE_COLUMNS`, the results files' column names no table may show."""

from __future__ import annotations

from html.parser import HTMLParser

# Column names of the results files that a reader must not see as table headers.
FILE_COLUMNS = {"paper_effect", "effect", "ci_low", "ci_high", "n_seeds", "basis", "t2a_x_chance", "a2t_x_chance"}


class Page(HTMLParser):
    """Tags with their attributes, element ids and the visible text of one HTML document."""

    HIDDEN = {"script", "style", "pre", "code", "textarea", "template", "noscript", "mjx-assistive-mml"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.ids: set[str] = set()
        self._hidden: list[str] = []
        self._text: list[str] = []
        self.feed(text)
        self.close()
        self.text = " ".join(self._text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        self.ids.update(attributes[k] for k in ("id", "name") if attributes.get(k))
        if tag in self.HIDDEN:
            self._hidden.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._hidden and self._hidden[-1] == tag:
            self._hidden.pop()

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._text.append(data)

    def count(self, tag: str) -> int:
        return sum(t == tag for t, _ in self.tags)

    def urls(self) -> list[tuple[str, str]]:
        """(tag, url) of every href/src: links, scripts, stylesheets, images, media."""
        return [(t, a[k]) for t, a in self.tags for k in ("href", "src") if a.get(k)]

    def math_elements(self) -> int:
        """Sphinx's math nodes: ``<span|div class="math ...">`` holding TeX for MathJax."""
        return sum("math" in a.get("class", "").split() for _, a in self.tags)
