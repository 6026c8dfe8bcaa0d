"""chatgw's sample corpus: Markdown documents about chatgw itself, which `chatgw dev` ingests on its
first run so that answers come with sources out of the box."""

from __future__ import annotations

from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent
