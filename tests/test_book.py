"""The book builds offline with warnings as errors, and a reader sees what the pages promise.

Builds the Jupyter Book into ``_build/html`` (``jupyter-book build . -W -n --keep-going``, notebook
outputs cached in ``_build/.jupyter_cache``), then checks the built files (internal links, no
resource from the network, no link to a file outside the book, API and reproduction-notes
coverage, the bibliography) and opens pages in headless Chromium: equations typeset by the local
MathJax, tables and audio players present, no code block or equation wider than the page at
1280 px. Screenshots go to ``_build/screenshots/`` for a person to look at. Also checks the
project files (LICENSE, CITATION.cff); the notebooks and the helpers the pages use
(``thadcr.interfaces.notebook``) are checked in tests/test_notebooks.py. Run alone with
``.venv/bin/pytest tests/test_book.py -m book``.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from html_page import FILE_COLUMNS, Page

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
MATHJAX = ROOT / "book" / "_static" / "mathjax" / "tex-chtml.js"
# the command line (and `python -m thadcr`) is a thin layer over documented functions
NOT_ON_API_PAGE = {"thadcr.__main__", "thadcr.interfaces.cli"}

# Raw TeX a reader must never see: delimiters MathJax should have consumed, and TeX commands.
RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\(?:frac|sum|mathcal|mathrm|hat|bar|alpha|lambda)\b")
# First bytes of the audio formats an embedded player may carry.
AUDIO_MAGIC = {"audio/wav": b"RIFF", "audio/x-wav": b"RIFF", "audio/ogg": b"OggS", "audio/flac": b"fLaC"}


def built_pages() -> list[Path]:
    return sorted(p for p in HTML.rglob("*.html") if "_static" not in p.relative_to(HTML).parts)


@pytest.fixture(scope="module")
def book() -> Path:
    """Build the book once for this module; fail with the build's warnings."""
    if not MATHJAX.is_file():
        pytest.fail(f"{MATHJAX} is missing: run `bash scripts/setup_book_assets.sh` (the README's set-up does)")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    if not jupyter_book.is_file():
        pytest.fail(f"{jupyter_book} is missing: install the book extras (pip install -e '.[book]')")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run(
        [str(jupyter_book), "build", str(ROOT), "-W", "-n", "--keep-going"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000,
    )
    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    problems = [line for line in log.splitlines() if re.search(r": (WARNING|ERROR|CRITICAL|SEVERE):", line)]
    if proc.returncode != 0:
        pytest.fail(
            f"jupyter-book build failed (exit {proc.returncode}); {len(problems)} warnings/errors:\n"
            + "\n".join(problems[:40] or log.splitlines()[-40:])
        )
    return HTML


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        message = "chromium is not installed: run `apt-get install -y chromium` (the README's set-up does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return exe


def run_chromium(exe: str, profile: Path, page: Path, *mode: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a built page with networking features off; 10 s of virtual time
    let MathJax load its components and typeset before the DOM is read or the picture taken."""
    command = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
        "--virtual-time-budget=10000", *mode, page.as_uri(),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium failed on {page}: {proc.stderr[-2000:]}"
    return proc


def rendered(exe: str, tmp_path: Path, relative: str) -> tuple[Page, Page]:
    """(page as built, page after Chromium ran its scripts); saves a screenshot as well."""
    path = HTML / relative
    assert path.is_file(), f"{relative} was not built: is it in _toc.yml?"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / (relative.replace("/", "-").removesuffix(".html") + ".png")
    partial = shot.with_suffix(".partial.png")
    run_chromium(exe, tmp_path / "profile", path, "--hide-scrollbars", "--window-size=1280,1600",
                 f"--screenshot={partial}")
    assert partial.is_file() and partial.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"no screenshot of {relative}"
    os.replace(partial, shot)
    dom = run_chromium(exe, tmp_path / "profile", path, "--dump-dom").stdout
    return Page(path.read_text(encoding="utf-8")), Page(dom)


def assert_typeset(relative: str, built: Page, live: Page, at_least: int) -> None:
    """Every math node of the built page became MathJax output, and no TeX is left visible."""
    n_math = built.math_elements()
    assert n_math >= at_least, f"{relative}: expected at least {at_least} equations in the built page, found {n_math}"
    n_typeset = live.count("mjx-container")
    assert n_typeset >= n_math, (
        f"{relative}: {n_math} equations but {n_typeset} MathJax outputs: MathJax did not run "
        "(is book/_static/mathjax/ populated and mathjax_path set in _config.yml?)"
    )
    raw = sorted(set(RAW_TEX.findall(live.text)))
    assert not raw, f"{relative}: raw TeX visible to the reader: {raw}"


# --- the built files -------------------------------------------------------------------------


def test_every_internal_link_and_asset_resolves(book: Path) -> None:
    pages = built_pages()
    assert len(pages) >= 10, f"only {len(pages)} pages built"
    parsed = {p: Page(p.read_text(encoding="utf-8")) for p in pages}
    broken = []
    for page, doc in parsed.items():
        for tag, url in doc.urls():
            parts = urlsplit(url)
            if parts.scheme or parts.netloc:  # external or data: URL, checked elsewhere
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page.relative_to(book)}: <{tag}> {url} -> missing file")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else Page(target.read_text(encoding="utf-8")).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{page.relative_to(book)}: <{tag}> {url} -> no id {parts.fragment!r}")
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:40])


def test_no_page_loads_anything_from_the_network(book: Path) -> None:
    remote = []
    for page in built_pages():
        for tag, attributes in Page(page.read_text(encoding="utf-8")).tags:
            url = attributes.get("src", "") if tag in {"script", "img", "iframe", "source", "audio"} else ""
            if tag == "link" and "stylesheet" in attributes.get("rel", ""):
                url = attributes.get("href", "")
            if urlsplit(url).scheme in {"http", "https"} or url.startswith("//"):
                remote.append(f"{page.relative_to(book)}: <{tag}> {url}")
    assert not remote, "pages load resources from the network (the book must work offline):\n" + "\n".join(remote)
    intro = (book / "book" / "intro.html").read_text(encoding="utf-8")
    assert re.search(r'<script[^>]+src="\.\./_static/mathjax/tex-chtml\.js', intro), "intro.html does not load the local MathJax"


def test_index_redirects_to_the_start_page(book: Path) -> None:
    index = (book / "index.html").read_text(encoding="utf-8")
    assert "book/intro.html" in index, "index.html does not lead to book/intro.html (root of _toc.yml)"


def test_api_page_documents_every_module(book: Path) -> None:
    source = (ROOT / "book" / "api.md").read_text(encoding="utf-8")
    built = (book / "book" / "api.html").read_text(encoding="utf-8")
    files = (p.relative_to(ROOT).with_suffix("") for p in (ROOT / "thadcr").rglob("*.py") if p.stem != "__init__")
    modules = sorted({".".join(f.parts) for f in files if "__pycache__" not in f.parts} - NOT_ON_API_PAGE)
    assert "thadcr.config" in modules
    unlisted = [m for m in modules if f".. automodule:: {m}\n" not in source]
    assert not unlisted, f"add an automodule section to book/api.md for: {', '.join(unlisted)}"
    undocumented = [m for m in modules if f'id="module-{m}"' not in built]
    assert not undocumented, (
        f"book/api.html lacks {', '.join(undocumented)}: the module failed to import during the build "
        "(run `python -c 'import <module>'` to see why)"
    )


def test_reproduction_notes_include_every_decision_file() -> None:
    source = (ROOT / "book" / "reproduction-notes.md").read_text(encoding="utf-8")
    decisions = sorted((ROOT / "docs" / "decisions").glob("*.md"))
    assert decisions, "docs/decisions/ holds no decision file"
    missing = [d.name for d in decisions if f"```{{include}} ../docs/decisions/{d.name}\n" not in source]
    assert not missing, (
        "book/reproduction-notes.md does not include: " + ", ".join(missing)
        + " (add a block ```{include} ../docs/decisions/NAME.md with :heading-offset: 1)"
    )


def audio_players(book: Path) -> dict[Path, list[str]]:
    """The data: URIs of the embedded audio players of each built page that has any."""
    players = {}
    for page in built_pages():
        doc = Page(page.read_text(encoding="utf-8"))
        urls = [a["src"] for t, a in doc.tags if t == "source" and a.get("src", "").startswith("data:audio/")]
        if urls:
            players[page] = urls
    return players


def test_embedded_audio_is_playable(book: Path) -> None:
    """IPython.display.Audio(embed) outputs become <audio> with a data: URI holding real audio."""
    players = audio_players(book)
    assert players, "no page has an embedded audio player (IPython.display.Audio with embed)"
    for page, urls in players.items():
        for url in urls:
            mime, _, payload = url[len("data:"):].partition(";base64,")
            head = base64.b64decode(payload[:16])
            magic = AUDIO_MAGIC.get(mime)
            assert magic is None or head.startswith(magic), f"{page.relative_to(book)}: {mime} data starts with {head[:4]!r}"


# --- what a reader sees in a browser ----------------------------------------------------------


def test_start_page_equations_are_typeset(book: Path, chromium: str, tmp_path: Path) -> None:
    built, live = rendered(chromium, tmp_path, "book/intro.html")
    assert_typeset("book/intro.html", built, live, at_least=10)
    assert "What the paper claims" in live.text


def test_experiments_page_shows_its_table(book: Path, chromium: str, tmp_path: Path) -> None:
    built, live = rendered(chromium, tmp_path, "book/experiments.html")
    assert_typeset("book/experiments.html", built, live, at_least=3)
    assert live.count("table") >= 1 and live.count("td") >= 15, "experiments.html: the overview table is missing"


def test_tables_page_shows_result_tables(book: Path, chromium: str, tmp_path: Path) -> None:
    built, live = rendered(chromium, tmp_path, "notebooks/tables.html")
    assert live.count("table") >= 1 and live.count("td") >= 6, (
        "notebooks/tables.html shows no result table: are the results under results/tiny/ committed "
        "(`thadcr reproduce --profile tiny`)?"
    )
    assert not RAW_TEX.findall(live.text), f"notebooks/tables.html: raw TeX {RAW_TEX.findall(live.text)}"


def test_audio_players_render(book: Path, chromium: str, tmp_path: Path) -> None:
    players = audio_players(book)
    assert players, "no page has an embedded audio player (IPython.display.Audio with embed)"
    for page, urls in players.items():
        relative = page.relative_to(book).as_posix()
        built, live = rendered(chromium, tmp_path, relative)
        assert live.count("audio") >= len(urls), f"{relative}: {len(urls)} players built, {live.count('audio')} rendered"
        assert_typeset(relative, built, live, at_least=0)


def test_reference_pages_render(book: Path, chromium: str, tmp_path: Path) -> None:
    built, live = rendered(chromium, tmp_path, "book/reproduction-notes.html")
    assert_typeset("book/reproduction-notes.html", built, live, at_least=0)
    assert live.count("li") >= 5, "book/reproduction-notes.html: the decision lists are missing"
    built, live = rendered(chromium, tmp_path, "book/api.html")
    assert_typeset("book/api.html", built, live, at_least=0)
    documented = sum("py" in a.get("class", "").split() for t, a in live.tags if t == "dl")
    assert documented >= 10, f"book/api.html documents only {documented} objects"


# --- nothing cut at the page's right edge; the Experiments pages read as a report -------------

# Runs in Chromium after MathJax has typeset the page; writes what it measured into the DOM:
# "wide": each code block that scrolls, each display equation wider than its box and each table
# wider than the content column (the article's box inside its padding, 676 px at a 1280 px
# window); "tables": each visible table's header texts and width; "images": each visible image's
# natural and shown width; "open_code": how many code cells show their source.
MEASURE = """<script>
window.addEventListener("load", () => {
  const ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
  ready.then(() => {
    const wide = [];
    document.querySelectorAll("pre").forEach((pre) => {
      if (pre.scrollWidth > pre.clientWidth + 1) {
        const lines = pre.textContent.split("\\n").filter((l) => l.trim());
        const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), "");
        const where = pre.closest(".cell_output") ? "output" : "code";
        wide.push([where, pre.scrollWidth, pre.clientWidth, longest]);
      }
    });
    document.querySelectorAll("div.math").forEach((box) => {
      const math = box.querySelector("mjx-math");
      const width = math ? math.getBoundingClientRect().width : 0;
      if (width > box.clientWidth + 1) {
        wide.push(["equation", Math.round(width), box.clientWidth, box.textContent.trim()]);
      }
    });
    const column = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
    const style = getComputedStyle(column);
    const box = column.getBoundingClientRect();
    const left = box.left + parseFloat(style.paddingLeft);
    const right = box.right - parseFloat(style.paddingRight);
    // drawn for the reader: not inside a closed <details> (a folded code cell), not display: none
    const visible = (element) => (element.checkVisibility ? element.checkVisibility()
                                                          : element.getClientRects().length > 0);
    const tables = [];
    column.querySelectorAll("table").forEach((table) => {
      if (!visible(table)) return;
      const rect = table.getBoundingClientRect();
      const width = Math.max(rect.width, table.scrollWidth);
      const headers = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
      const rowHeaders = [...table.querySelectorAll("tbody th")].map((th) => th.textContent.trim());
      tables.push({headers: headers, row_headers: rowHeaders, width: Math.round(width)});
      if (width > right - left + 1 || rect.left < left - 1 || rect.left + width > right + 1) {
        const cells = [...table.querySelectorAll("caption, th, td")].map((cell) => cell.textContent.trim());
        const name = cells.find((text) => text) || "";
        wide.push(["table", Math.round(width), Math.round(right - left), name]);
      }
    });
    const images = [...column.querySelectorAll("img")].filter(visible).map(
      (img) => [img.naturalWidth, img.getBoundingClientRect().width]);
    const openCode = [...column.querySelectorAll(".cell_input pre")].filter(visible).length;
    const report = document.createElement("div");
    report.id = "overflow-report";
    report.hidden = true;
    report.textContent = JSON.stringify({wide: wide, tables: tables, images: images, open_code: openCode,
                                         column: Math.round(right - left)});
    document.body.appendChild(report);
  });
});
</script>"""


def measure(exe: str, tmp_path: Path, page: Path) -> dict:
    """What ``MEASURE`` reports on ``page`` in Chromium at 1280 px. The page is copied with a
    <base> pointing at its folder and the measuring script."""
    text = page.read_text(encoding="utf-8")
    base = f'<base href="{page.parent.as_uri()}/">'
    copy = tmp_path / f"measure-{page.stem}.html"
    copy.write_text(text.replace("<head>", "<head>" + base, 1).replace("</body>", MEASURE + "</body>", 1),
                    encoding="utf-8")  # fmt: skip
    dom = run_chromium(exe, tmp_path / "profile", copy, "--window-size=1280,1600", "--dump-dom").stdout
    found = re.search(r'<div id="overflow-report" hidden="">(.*?)</div>', dom, re.S)
    assert found, f"{page}: the measuring script did not run"
    return json.loads(html.unescape(found.group(1)))


def too_wide(exe: str, tmp_path: Path, page: Path) -> list[list]:
    """[kind, content width, visible width, longest line or the table's first cell] of each code
    block (``pre``) that scrolls horizontally, each display equation wider than its box and each
    table wider than the content column, on ``page`` in Chromium at 1280 px."""
    return measure(exe, tmp_path, page)["wide"]


@pytest.fixture(scope="module")
def measured(book: Path, chromium: str, tmp_path_factory: pytest.TempPathFactory) -> dict[Path, dict]:
    """``measure`` of every built page but the redirects, once for the tests below."""
    tmp_path = tmp_path_factory.mktemp("measure")
    pages = [p for p in built_pages() if 'http-equiv="Refresh"' not in p.read_text(encoding="utf-8")]
    assert len(pages) >= 10, f"only {len(pages)} pages to measure"
    return {page: measure(chromium, tmp_path, page) for page in pages}


def test_no_code_block_or_equation_is_cut_at_1280px(measured: dict[Path, dict]) -> None:
    """The book's text column at 1280 px holds about 88 characters of code: longer lines scroll
    horizontally and a reader sees them cut. Every built page, every ``pre`` (code cells, their
    printed outputs, command blocks) and every display equation must fit."""
    problems = [f"{page.relative_to(HTML)}: {kind} {width} px in {visible} px: {line[:100]!r}"
                for page, report in measured.items() for kind, width, visible, line in report["wide"]
                if kind != "table"]  # fmt: skip
    assert not problems, f"{len(problems)} blocks wider than the page:\n" + "\n".join(problems)


def test_no_table_is_wider_than_the_content_column_at_1280px(measured: dict[Path, dict]) -> None:
    """Every table of every built page (the result tables of the Tables page, Markdown tables,
    the API page's) fits the content column at a 1280 px window: a wider one is cut at the
    column's edge or scrolls, and its last columns are out of the reader's sight."""
    assert sum(len(report["tables"]) for report in measured.values()) >= 7
    problems = [f"{page.relative_to(HTML)}: table {width} px in a {column} px column: {name[:80]!r}"
                for page, report in measured.items() for kind, width, column, name in report["wide"]
                if kind == "table"]  # fmt: skip
    assert not problems, f"{len(problems)} tables wider than the content column:\n" + "\n".join(problems)


def test_overflow_check_sees_a_long_line_and_a_wide_table(book: Path, chromium: str, tmp_path: Path) -> None:
    """The measuring script itself: a 200-character code line and a table of 30 unbreakable
    numbers a row, added to a copy of a built page, are both found."""
    page = book / "book" / "intro.html"
    wide = tmp_path / "wide" / "intro.html"
    wide.parent.mkdir()
    long = "x = " + "1 + " * 49 + "1"
    table = "<table><tr><td>numbers</td>" + "<td>1234567.89</td>" * 30 + "</tr></table>"
    wide.write_text(page.read_text(encoding="utf-8").replace("</article>", f"<pre>{long}</pre>{table}</article>", 1),
                    encoding="utf-8")  # fmt: skip
    found = too_wide(chromium, tmp_path, wide)
    assert any(kind == "code" and line == long for kind, _, _, line in found), found
    assert any(kind == "table" and name == "numbers" and width > visible for kind, width, visible, name in found), found


def test_experiments_pages_read_as_a_report(measured: dict[Path, dict]) -> None:
    """The Tables and Figures pages at 1280 px: every code cell folded (hide-input, a reader can
    open it), tables without a numbered index and with a reader's column names, every figure
    shown at the size it was drawn (so its labels are at the size the figure gives them: the
    body text's, `thadcr.interfaces.notebook.figures.figure_style`); the method pages keep their code open."""
    for name in ("tables", "figures"):
        page = HTML / "notebooks" / f"{name}.html"
        cells = re.findall(r'<div class="cell( [^"]*)?"', page.read_text(encoding="utf-8"))
        unfolded = [classes for classes in cells if "tag_hide-input" not in classes.split()]
        assert cells and not unfolded, f"{name}.html: {len(unfolded)} of {len(cells)} code cells not folded"
        assert measured[page]["open_code"] == 0, f"{name}.html shows {measured[page]['open_code']} code cells"
    tables = measured[HTML / "notebooks" / "tables.html"]["tables"]
    assert len(tables) >= 7, f"tables.html: {len(tables)} tables (claims, Tables 1-5, learning)"
    for table in tables:
        index = [h for h in table["row_headers"] + table["headers"] if h.isdigit()]
        assert not index, f"tables.html: a table shows a numbered index {index[:5]}"
        assert not FILE_COLUMNS & set(table["headers"]), f"tables.html: file column names {table['headers']}"
    claims = next(t for t in tables if "verdict" in t["headers"])
    assert {"paper's effect", "ours", "95 % interval", "verdict", "seeds"} <= set(claims["headers"])
    images = measured[HTML / "notebooks" / "figures.html"]["images"]
    assert len(images) >= 5, f"figures.html: {len(images)} figures"
    shrunk = [(natural, round(shown)) for natural, shown in images if shown < natural - 1]
    assert not shrunk, f"figures.html: figures shown smaller than drawn (natural, shown px): {shrunk}"
    assert measured[HTML / "notebooks" / "tha.html"]["open_code"] >= 3, "tha.html: the method's code is folded"


# --- links, bibliography and project files ----------------------------------------------------

FILE_SUFFIXES = (".md", ".py", ".yml", ".yaml", ".csv", ".json", ".txt", ".cfg", ".sh", ".pt", ".npz", ".ipynb")


def test_no_link_points_at_a_file_outside_the_book(book: Path) -> None:
    """A file name in prose must not become a web link (MyST's linkify turned "peers.md" into
    http://peers.md); sources outside the book are named, not linked."""
    bad = []
    for page in built_pages():
        for tag, url in Page(page.read_text(encoding="utf-8")).urls():
            host = urlsplit(url).hostname or ""
            if tag == "a" and urlsplit(url).scheme in {"http", "https"} and host.endswith(FILE_SUFFIXES):
                bad.append(f"{page.relative_to(book)}: {url}")
    assert not bad, "links to file names read as web addresses:\n" + "\n".join(bad)


def test_bibliography_lists_the_cited_works(book: Path) -> None:
    """book/references.bib through sphinxcontrib-bibtex: the References page lists the paper and
    the works the method pages cite, and the pages link their citations to it."""
    # the bibliography style writes titles in sentence case
    references = Page((book / "book" / "references.html").read_text(encoding="utf-8")).text.lower()
    for title in ("Audio-text Retrieval with Transformer-based Hierarchical Alignment",
                  "Stacked Cross Attention for Image-Text Matching",
                  "On Metric Learning for Audio-Text Cross-Modal Retrieval",
                  "Hierarchical Token-Semantic Audio Transformer",
                  "Large-Scale Pretrained Audio Neural Networks",
                  "Pre-training of Deep Bidirectional Transformers",
                  "A Simple Framework for Contrastive Learning",
                  "Generating Captions for Audios in the Wild",
                  "Clotho: An Audio Captioning Dataset"):  # fmt: skip
        assert title.lower() in references, f"references.html does not list {title!r}"
    tha = (book / "notebooks" / "tha.html").read_text(encoding="utf-8")
    assert re.search(r'<a [^>]*href="\.\./book/references\.html#id\d+"', tha), "tha.html cites nothing"


def test_license_and_citation_metadata() -> None:
    import tomllib

    import yaml

    import thadcr

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == {"text": "MIT"}
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License") and "thadcr contributors" in license_text
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert cff["version"] == thadcr.__version__, "CITATION.cff's version differs from thadcr.__version__"
    paper = cff["preferred-citation"]
    assert paper["type"] == "conference-paper" and paper["year"] == 2024
    assert [a["family-names"] for a in paper["authors"]] == ["Xin", "Zhu", "Cheng", "Yang", "Zou"]
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    entry = re.search(r"@inproceedings\{xin2024thadcr,.*?title\s*=\s*\{(.*?)\},", bib, re.S)
    assert entry and entry.group(1) == paper["title"], "the paper's title differs between CITATION.cff and the .bib"
