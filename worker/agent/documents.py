"""Files → titled chunks for the index: .md, .txt and .html (HTML → text with the stdlib parser).

Markdown headings give chunk titles: ``document title — section heading``. HTML is turned into the
same Markdown-ish text first (``<h2>`` → ``## ...``), so both go through one splitter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm"})
TITLE_SEPARATOR = " — "
_HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]
_FIRST_HEADING_RE = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FENCE_RE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class Document:
    title: str
    text: str
    markdown: bool  # headings are meaningful (Markdown, or HTML converted to it)


@dataclass(frozen=True, slots=True)
class Chunk:
    title: str
    text: str

    @property
    def embedding_text(self) -> str:
        # The title carries the section's topic, which the chunk's own words often do not repeat.
        return f"{self.title}\n{self.text}"


def _default_title(path: Path) -> str:
    return path.stem.replace("_", " ").replace("-", " ").strip() or path.name


# ---------------------------------------------------------------- HTML


class _HtmlToText(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "svg"})
    _BLOCK = frozenset(
        {
            "p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header",
            "footer", "nav", "aside", "main", "blockquote", "pre", "dd", "dt", "dl", "figure", "hr",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip_depth = 0
        self._in_title = False
        self._heading: int | None = None
        self._heading_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag == "title":
            self._in_title = True
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self._heading, self._heading_text = int(tag[1]), []
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag == "title":
            self._in_title = False
        elif self._heading is not None and tag == f"h{self._heading}":
            text = " ".join("".join(self._heading_text).split())
            if text:
                self.parts.append(f"\n\n{'#' * self._heading} {text}\n\n")
            self._heading = None
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._in_title:
            self.title += data
        elif self._heading is not None:
            self._heading_text.append(data)
        else:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, text) of an HTML page; script/style skipped, headings kept as ``#`` lines."""
    parser = _HtmlToText()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return " ".join(parser.title.split()), text


# ---------------------------------------------------------------- reading and splitting


def read_document(path: Path, data: bytes) -> Document:
    """Decode one file's bytes (UTF-8; undecodable bytes replaced) into a titled document."""
    raw = data.decode("utf-8-sig", errors="replace")
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        title, text = html_to_text(raw)
        return Document(title or _first_heading(text) or _default_title(path), text, markdown=True)
    if suffix in (".md", ".markdown"):
        return Document(_first_heading(raw) or _default_title(path), raw, markdown=True)
    return Document(_default_title(path), raw, markdown=False)


def _first_heading(markdown: str) -> str | None:
    # A '#' line inside a code fence is a shell comment, not a heading.
    match = _FIRST_HEADING_RE.search(_FENCE_RE.sub("", markdown))
    return match.group(2) if match else None


def split_document(doc: Document, chunk_size: int, chunk_overlap: int) -> list[Chunk]:
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    if not doc.markdown:
        return [Chunk(doc.title, t) for t in splitter.split_text(doc.text) if t.strip()]
    chunks: list[Chunk] = []
    for section in MarkdownHeaderTextSplitter(_HEADERS).split_text(doc.text):
        headings = [str(section.metadata[key]) for _, key in _HEADERS if key in section.metadata]
        if headings and headings[0] == doc.title:
            headings = headings[1:]  # the document's own title heading
        title = TITLE_SEPARATOR.join([doc.title, *headings[-2:]])
        chunks.extend(Chunk(title, t) for t in splitter.split_text(section.page_content) if t.strip())
    return chunks
