"""A report page: headings, tables, figures and text rendered as self-contained HTML and as Markdown."""

import base64
import html
import json
from pathlib import Path

from pipeline.core.files import atomic_path

# The page's self-check, read by the browser test: how many images decoded, and any script error.
SELF_CHECK = """<script>
window.addEventListener("error", e => document.body.dataset.errors = (document.body.dataset.errors || "") + e.message);
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.dataset.images = images.filter(i => i.complete && i.naturalWidth > 0).length + "/" + images.length;
});
</script>"""


STYLE = """<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } mark { background: #ffd0d0; } pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.missing { color: #a00; }
</style>"""


class Page:
    """Blocks rendered twice: HTML (images inline) and Markdown (images as files beside it)."""

    def __init__(self, figures: Path):
        self.figures, self.html, self.md = figures, [], []

    def heading(self, text: str, level: int = 2) -> None:
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md.append(f"{'#' * level} {text}\n")

    def text(self, text: str, missing: bool = False) -> None:
        cls = ' class="missing"' if missing else ""
        self.html.append(f"<p{cls}>{html.escape(text)}</p>")
        self.md.append(f"{'**' if missing else ''}{text}{'**' if missing else ''}\n")

    def table(self, header: list[str], rows: list[list], marked: set[tuple[int, int]] = frozenset()) -> None:
        """Cells may be str or numbers (numbers right-aligned, floats with 2 decimals); (row, col) in marked
        is highlighted as an error."""

        def fmt(x):
            return f"{x:.2f}" if isinstance(x, float) else str(x)

        cells = []
        for r, row in enumerate(rows):
            tds = []
            for c, x in enumerate(row):
                body = html.escape(fmt(x))
                body = f"<mark>{body}</mark>" if (r, c) in marked else body
                tds.append(f'<td class="num">{body}</td>' if isinstance(x, int | float) else f"<td>{body}</td>")
            cells.append("<tr>" + "".join(tds) + "</tr>")
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(cells)}</tbody></table>")

        def md_cell(r, c, x):
            s = fmt(x).replace("|", "\\|")
            return f"**{s}**" if (r, c) in marked else s

        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(md_cell(r, c, x) for c, x in enumerate(row)) + " |" for r, row in enumerate(rows)]
        self.md.append("\n".join(lines) + "\n")

    def marked_html(self, parts: list[tuple[str, bool]]) -> None:
        """A line of words, the flagged ones highlighted (<mark> / **bold**)."""
        self.html.append(
            "<p>" + " ".join(f"<mark>{html.escape(w)}</mark>" if bad else html.escape(w) for w, bad in parts) + "</p>"
        )
        self.md.append(" ".join(f"**{w}**" if bad else w for w, bad in parts) + "\n")

    def pre(self, text: str) -> None:
        self.html.append(f"<pre>{html.escape(text)}</pre>")
        self.md.append(f"```\n{text}\n```\n")

    def figure(self, fig, name: str, caption: str) -> None:
        import matplotlib.pyplot as plt

        path = self.figures / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        b64 = base64.b64encode(path.read_bytes()).decode()
        self.html.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
        self.md.append(f"![{caption}](figures/{name}.png)\n")

    def render_html(self, title: str) -> str:
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"{STYLE}</head>\n<body>\n<h1>{html.escape(title)}</h1>\n" + "\n".join(self.html) + f"\n{SELF_CHECK}\n"
            "</body></html>\n"
        )

    def render_md(self, title: str) -> str:
        return f"# {title}\n\n" + "\n".join(self.md)


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display here, in CI or in make
    import matplotlib.pyplot as plt

    return plt
