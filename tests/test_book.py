"""The book builds offline with warnings as errors, and a reader sees what the pages promise.

Builds the Jupyter Book into ``_build/html`` (``jupyter-book build . -W -n --keep-going``, notebook
outputs cached in ``_build/.jupyter_cache``), then checks the built files (internal links, no
resource from the network, no link to a file outside the book, API and reproduction-notes
coverage, the bibliography) and opens pages in headless Chromium: equations typeset by the local
MathJax, tables and audio players present, no code block or equation wider than the page at
1280 px. Screenshots go to ``_build/screenshots/`` for a person to look at. Also checks the
project files (LICENSE, CITATION.cff, the jupytext pairing of the notebooks) and the helpers the
pages use (``thadcr.notebook``). Run alone with ``.venv/bin/pytest tests/test_book.py -m book``.
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
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
MATHJAX = ROOT / "book" / "_static" / "mathjax" / "tex-chtml.js"
# the command line (and `python -m thadcr`) is a thin layer over documented functions
NOT_ON_API_PAGE = {"__init__", "__main__", "cli"}

# Raw TeX a reader must never see: delimiters MathJax should have consumed, and TeX commands.
RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\(?:frac|sum|mathcal|mathrm|hat|bar|alpha|lambda)\b")
# First bytes of the audio formats an embedded player may carry.
AUDIO_MAGIC = {"audio/wav": b"RIFF", "audio/x-wav": b"RIFF", "audio/ogg": b"OggS", "audio/flac": b"fLaC"}


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
    modules = sorted(p.stem for p in (ROOT / "thadcr").glob("*.py") if p.stem not in NOT_ON_API_PAGE)
    assert "config" in modules
    unlisted = [m for m in modules if f".. automodule:: thadcr.{m}\n" not in source]
    assert not unlisted, f"add an automodule section to book/api.md for: {', '.join(unlisted)}"
    undocumented = [m for m in modules if f'id="module-thadcr.{m}"' not in built]
    assert not undocumented, (
        f"book/api.html lacks {', '.join(undocumented)}: the module failed to import during the build "
        "(run `python -c 'import thadcr.<name>'` to see why)"
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


# --- no code or equation cut at the page's right edge -----------------------------------------

# Runs in Chromium after MathJax has typeset the page; writes what is too wide into the DOM.
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
    const report = document.createElement("div");
    report.id = "overflow-report";
    report.hidden = true;
    report.textContent = JSON.stringify(wide);
    document.body.appendChild(report);
  });
});
</script>"""


def too_wide(exe: str, tmp_path: Path, page: Path) -> list[list]:
    """[kind, content width, visible width, longest line] of each code block (``pre``) that
    scrolls horizontally and each display equation wider than its box, on ``page`` in Chromium
    at 1280 px. The page is copied with a <base> pointing at its folder and the measuring script."""
    text = page.read_text(encoding="utf-8")
    base = f'<base href="{page.parent.as_uri()}/">'
    copy = tmp_path / f"measure-{page.stem}.html"
    copy.write_text(text.replace("<head>", "<head>" + base, 1).replace("</body>", MEASURE + "</body>", 1),
                    encoding="utf-8")  # fmt: skip
    dom = run_chromium(exe, tmp_path / "profile", copy, "--window-size=1280,1600", "--dump-dom").stdout
    found = re.search(r'<div id="overflow-report" hidden="">(.*?)</div>', dom, re.S)
    assert found, f"{page.relative_to(HTML)}: the measuring script did not run"
    return json.loads(html.unescape(found.group(1)))


def test_no_code_block_or_equation_is_cut_at_1280px(book: Path, chromium: str, tmp_path: Path) -> None:
    """The book's text column at 1280 px holds about 88 characters of code: longer lines scroll
    horizontally and a reader sees them cut. Every built page, every ``pre`` (code cells, their
    printed outputs, command blocks) and every display equation must fit."""
    problems = []
    pages = [p for p in built_pages() if 'http-equiv="Refresh"' not in p.read_text(encoding="utf-8")]
    assert len(pages) >= 10, f"only {len(pages)} pages to measure"
    for page in pages:
        for kind, width, visible, line in too_wide(chromium, tmp_path, page):
            problems.append(f"{page.relative_to(book)}: {kind} {width} px in {visible} px: {line[:100]!r}")
    assert not problems, f"{len(problems)} blocks wider than the page:\n" + "\n".join(problems)


def test_overflow_check_sees_a_long_line(book: Path, chromium: str, tmp_path: Path) -> None:
    """The measuring script itself: a 200-character code line on a copy of a built page is found."""
    page = book / "book" / "intro.html"
    wide = tmp_path / "wide" / "intro.html"
    wide.parent.mkdir()
    long = "x = " + "1 + " * 49 + "1"
    wide.write_text(page.read_text(encoding="utf-8").replace("</article>", f"<pre>{long}</pre></article>", 1),
                    encoding="utf-8")  # fmt: skip
    found = too_wide(chromium, tmp_path, wide)
    assert any(kind == "code" and line == long for kind, _, _, line in found), found


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


def test_jupytext_pairing_has_one_convention() -> None:
    """Notebooks with a committed golden .ipynb declare ``formats: ipynb,py:percent``; the others
    ``py:percent`` only (docs/decisions/notebooks.md)."""
    wrong = []
    for source in sorted((ROOT / "notebooks").glob("*.py")):
        found = re.search(r"^#\s+formats:\s*(\S+)\s*$", source.read_text(encoding="utf-8"), re.M)
        expected = "ipynb,py:percent" if source.with_suffix(".ipynb").is_file() else "py:percent"
        if not found or found.group(1) != expected:
            wrong.append(f"{source.name}: {found.group(1) if found else 'no formats line'}, expected {expected}")
    assert not wrong, "jupytext pairing:\n" + "\n".join(wrong)


def test_notebook_code_fits_the_page() -> None:
    """Code lines of the book's notebooks stay within 88 characters (the measured width of the
    book's code column at 1280 px); the browser test checks the rendered pages."""
    pages = [Path(entry) for entry in re.findall(r"file: (notebooks/\w+)", (ROOT / "_toc.yml").read_text())]
    assert len(pages) >= 7
    long = []
    for page in pages:
        for number, line in enumerate((ROOT / page).with_suffix(".py").read_text().splitlines(), 1):
            if len(line) > 88 and not line.startswith("#"):
                long.append(f"{page}.py:{number}: {len(line)} characters")
    assert not long, "\n".join(long)


# --- helpers of the pages (thadcr.notebook) ----------------------------------------------------


def test_model_diagram_labels_follow_the_config() -> None:
    from thadcr.config import make_config
    from thadcr.notebook import diagram_labels

    paper = diagram_labels(make_config("paper-audiocaps"))
    assert paper["audio_levels"].split("\n") == ["$A^{s2}$ (B, 1024, 192)", "$A^{s3}$ (B, 256, 384)",
                                                 "$A^{s4}$ (B, 64, 768)"]  # fmt: skip
    assert "(B, N, 768)" in paper["text_levels"] and "T^{4}, T^{10}, T^{12}" in paper["text_levels"]
    assert "(B, 768)" in paper["audio_global"] and "(B, K=8, D/K=96)" in paper["audio_factors"]
    assert "log-mel (B, 1001, 64)" in paper["audio_in"] and "pooled" not in paper["tha"]
    tiny = diagram_labels(make_config("tiny", {"n_factors": 4}))
    assert "$A^{s2}$ (B, 256, 64)" in tiny["audio_levels"] and "pooled to 64, 64, 16" in tiny["tha"]
    assert "(B, N, 384)" in tiny["text_levels"] and "(B, K=4, D/K=16)" in tiny["text_factors"]
    assert "log-mel (B, 501, 64)" in tiny["audio_in"] and "C (4, 4)" in tiny["corr"]


def test_ranks_of_counts_ties_against_the_relevant_items() -> None:
    from thadcr.notebook import ranks_of

    scores = [0.9, 0.5, 0.5, 0.1, 0.7]
    assert ranks_of(scores, [False, True, False, False, False]).tolist() == [4]  # tied with item 2
    assert ranks_of(scores, [True, False, False, True, True]).tolist() == [1, 5, 2]


def test_scene_events_reads_the_scene_list(tmp_path: Path) -> None:
    from thadcr.notebook import scene_events

    import csv

    timelines = {"a.wav": {"events": [{"class": "dog"}, {"class": "door_close"}], "background": {"class": "wind"}},
                 "b.wav": {"events": [{"class": "cat"}], "background": None}}  # fmt: skip
    with (tmp_path / "scenes_evaluation.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "timeline", "sources", "licences"])
        writer.writerows([name, json.dumps(timeline), "x", "y"] for name, timeline in timelines.items())
    scenes = scene_events(tmp_path)
    assert scenes == {"a.wav": {"events": ["dog", "door_close"], "background": "wind"},
                      "b.wav": {"events": ["cat"], "background": None}}  # fmt: skip
    with pytest.raises(FileNotFoundError, match="thadcr data build"):
        scene_events(tmp_path, "validation")


def test_result_sentences_say_what_the_numbers_show() -> None:
    import numpy as np

    from thadcr.notebook import confidence_sentence, factor_loss_sentence, table1_run_id

    assert table1_run_id("DCR") == "audiocaps-DCR-htsat-K8-a0.01-b0.005-s0"
    assert table1_run_id("DP (ResNet38)", seed=2) == "audiocaps-DP-resnet38-K8-a0.01-b0.005-s2"
    near = np.eye(3) * 0.2 + 0.01
    better = np.eye(3) * 0.9
    assert "L_D fell" in factor_loss_sentence(near, better) and "L_A fell" in factor_loss_sentence(near, better)
    worse = better + 0.3 * (1 - np.eye(3))
    rose = factor_loss_sentence(better, worse)
    assert "L_D rose" in rose and "L_A did not fall" in rose
    rng = np.random.default_rng(0)
    g = rng.normal(size=(500, 8))
    assert "does not separate" in confidence_sentence(g, rng.normal(size=(500, 8)))
    assert "larger confidence more often than chance, as" in confidence_sentence(g + 1.0, g[::-1])
    assert "the opposite" in confidence_sentence(g - 1.0, g[::-1])
