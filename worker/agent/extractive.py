"""Extractive answers: the sentences of the retrieved sources that best match the question.

The offline model answers with 2-4 whole sentences taken from the sources, in the order they appear
(sources best first, then position within each), each run of sentences from one source followed by
its title in brackets as the citation. A pure function: same question and sources, same answer.

Sentences are scored by the question's content words they contain, each weighted by how rare it is
among the candidate sentences (IDF); words of the source's title count half for each of its sentences
(an FAQ answer rarely repeats its question), and better-ranked sources are preferred.
Markdown is read as prose: code blocks and headings are skipped, list markers and emphasis removed,
and a table row becomes one sentence ("cell: cell; cell.").
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from shared.protocol import Source
from worker.agent.lexical import query_terms, words

MIN_SENTENCES = 2
MAX_SENTENCES = 4
MIN_WORDS = 4  # shorter fragments ("See below.") say nothing on their own
KEEP_FRACTION = 0.6  # sentences scoring under this share of the best one are left out
RANK_PENALTY = 0.15  # per source rank: the retriever's order is the best evidence of relevance
TITLE_WEIGHT = 0.5
LEAD_SENTENCES = 2
_FENCE_RE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(\[0-9])")
_LIST_MARKER_RE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_LINK_RE = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_TABLE_RULE_RE = re.compile(r"^\|?\s*:?-{3,}")


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str
    source: int  # rank of its source, 0 = best
    position: int  # order within the source


def _table_row(line: str) -> str:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    cells = [c for c in cells if c]
    if len(cells) < 2:
        return " ".join(cells)
    return f"{cells[0]}: {'; '.join(cells[1:])}."


def _paragraphs(text: str) -> list[str]:
    """Prose blocks of a Markdown snippet: one per paragraph, list item or table row."""
    blocks: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            blocks.append(" ".join(current))
            current.clear()

    lines = _FENCE_RE.sub("\n", text).splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        next_line = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if not stripped or stripped.startswith("#") or stripped.startswith(("```", "~~~")):
            flush()
        elif stripped.startswith("|"):
            flush()
            if not _TABLE_RULE_RE.match(stripped) and not _TABLE_RULE_RE.match(next_line):
                blocks.append(_table_row(stripped))  # a header row is followed by the |---| rule
        elif _LIST_MARKER_RE.match(line):
            flush()
            current.append(_LIST_MARKER_RE.sub("", line).strip())
        else:
            current.append(stripped)
    flush()
    return blocks


def _clean(sentence: str) -> str:
    sentence = _LINK_RE.sub(r"\1", sentence).replace("**", "").strip()
    return re.sub(r"\s+", " ", sentence)


def split_sentences(text: str) -> list[str]:
    """Whole sentences of a snippet, each ending with . ! or ? (one that introduced a code block or a
    list, ending with ":", ends with a full stop instead)."""
    out = []
    for block in _paragraphs(text):
        for piece in _SENTENCE_END_RE.split(block):
            sentence = _clean(piece)
            if len(sentence.split()) < MIN_WORDS:
                continue
            if sentence[-1] not in ".!?":
                sentence = sentence.rstrip(",;:") + "."
            out.append(sentence)
    return out


def _candidates(sources: Sequence[Source]) -> list[Sentence]:
    seen: set[str] = set()  # overlapping chunks repeat sentences
    out = []
    for rank, source in enumerate(sources):
        for position, text in enumerate(split_sentences(source.snippet)):
            if text not in seen:
                seen.add(text)
                out.append(Sentence(text, rank, position))
    return out


def _scores(question: str, candidates: Sequence[Sentence], sources: Sequence[Source]) -> list[float]:
    wanted = set(query_terms(question))
    titles = [set(words(s.title)) & wanted for s in sources]
    bags = [set(words(c.text)) & wanted for c in candidates]
    count = len(candidates)
    df = {
        t: sum(t in bag or t in titles[c.source] for bag, c in zip(bags, candidates, strict=True))
        for t in wanted
    }
    idf = {t: math.log(1 + count / n) for t, n in df.items() if n}
    scores = []
    for bag, c in zip(bags, candidates, strict=True):
        own = sum(idf[t] for t in bag)
        borrowed = TITLE_WEIGHT * sum(idf[t] for t in titles[c.source] - bag)
        # A sentence sharing no word with the question counts only right under a matching heading
        # (the answer to an FAQ entry): elsewhere, its title alone does not make it an answer.
        relevant = bool(bag) or (borrowed > 0 and c.position < LEAD_SENTENCES)
        scores.append((own + borrowed) * (1 - RANK_PENALTY * c.source) if relevant else 0.0)
    return scores


def select_sentences(question: str, sources: Sequence[Source], max_words: int) -> list[Sentence]:
    """The best 2-4 sentences that fit in ``max_words`` with their citations, in reading order; [] when
    none matches."""
    candidates = _candidates(sources)
    scores = _scores(question, candidates, sources)
    best = max(scores, default=0.0)
    if best <= 0:
        return []
    ranked = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))
    chosen: list[int] = []
    cited: set[int] = set()
    used = 0
    for i in ranked:
        strong = scores[i] >= KEEP_FRACTION * best
        if len(chosen) >= MAX_SENTENCES or (not strong and len(chosen) >= MIN_SENTENCES) or scores[i] <= 0:
            break
        source = candidates[i].source
        size = len(candidates[i].text.split()) + (
            0 if source in cited else len(sources[source].title.split())
        )
        if used + size > max_words:
            continue  # too long for what is left; a shorter one may fit
        chosen.append(i)
        cited.add(source)
        used += size
    if not chosen:
        chosen = ranked[:1]  # nothing fits whole: the best sentence, cut at the cap
    return [
        candidates[i] for i in sorted(chosen, key=lambda i: (candidates[i].source, candidates[i].position))
    ]


def cite(sentences: Sequence[Sentence], sources: Sequence[Source]) -> str:
    """Sentences in order, each run from one source followed by ``[its title]``."""
    parts: list[str] = []
    for i, sentence in enumerate(sentences):
        parts.append(sentence.text)
        last_of_run = i + 1 == len(sentences) or sentences[i + 1].source != sentence.source
        if last_of_run:
            title = " ".join(sources[sentence.source].title.split())
            parts.append(f"[{title}]")
    return " ".join(parts)
