"""Load MathJax on every page of the book, not only on pages with equations of their own.

Chapter titles may hold math (e.g. "CA and $S_{DCR}$"); they appear in the navigation of every
page, and without MathJax a reader would see their raw TeX there.
"""


def setup(app):
    app.set_html_assets_policy("always")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
