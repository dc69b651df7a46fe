"""Text for the local knowledge base: Russian stemming and Markdown chunking.

    tokens("повторного ремонта") == tokens("повторный ремонт")   # ["повторн", "ремонт"]
    split_sections(markdown)   # [(heading path, section text), ...]
    split_text(section)        # pieces of ~1500 chars, 300 of overlap

Kept apart from the SQLite code so either can change without the other; both feed SCHEMA_VERSION.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

CHUNK_SIZE, CHUNK_OVERLAP = 1500, 300  # the managed service's defaults
_WORD = re.compile(r"[0-9a-zа-яё]+")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE = re.compile(r"(?<=[.!?…])\s+")
# Snowball only strips suffixes: it cannot join "день"/"дней" or a numeral with its digits, which
# matter here ("тридцать дней" vs "30 дней"). These word forms get one token each.
_IRREGULAR = {
    **dict.fromkeys(("день", "дня", "дню", "днем", "дни", "дней", "дням", "днями", "днях"), "день"),
    **dict.fromkeys(("тридцать", "тридцати", "тридцатью"), "30"),
    **dict.fromkeys(("сорок", "сорока"), "40"),
    **dict.fromkeys(("пятнадцать", "пятнадцати", "пятнадцатью"), "15"),
    **dict.fromkeys(("десять", "десяти", "десятью"), "10"),
    **dict.fromkeys(("семь", "семи"), "7"),
    **dict.fromkeys(("недостаток", "недостатка", "недостатку", "недостатком", "недостатке"), "недостатк"),
}
# Dropped from queries only (when something else is left): they match everything and add noise.
_STOP_WORDS = (
    "и в во на по с со к ко о об от до за из у не ни что как а но или ли же бы то это для при мне мой я "
    "мы вы он она они его ее их какой какие каком если чем где когда делать должен должна должно должны "
    "быть был была было были есть нужно можно"
)
_STOP = frozenset(_STOP_WORDS.split())
_STEMMER: Any = None  # made on first use: importing snowballstemmer loads all its 36 languages
_STEM_LOCK = threading.Lock()  # the stemmer object keeps state between calls


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("ё", "е"))


@functools.lru_cache(maxsize=65536)
def _stem_word(word: str) -> str:
    # Cached: Snowball costs ~20 µs a word in pure Python and a corpus repeats its words a lot.
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    global _STEMMER
    with _STEM_LOCK:
        if _STEMMER is None:
            import snowballstemmer

            _STEMMER = snowballstemmer.stemmer("russian")
        return _STEMMER.stemWord(word)


def _stem(words: list[str]) -> list[str]:
    return [_stem_word(w) for w in words]


def tokens(text: str) -> list[str]:
    """Lower-cased, ё→е, irregular forms joined, Snowball-stemmed words."""
    return _stem(_words(text))


def match_expression(query: str) -> str | None:
    """FTS5 MATCH text: the OR of the query's distinct stems, each quoted (no FTS syntax passes)."""
    words = _words(query)
    kept = [w for w in words if w not in _STOP] or words
    stems = list(dict.fromkeys(_stem(kept)))[:64]
    return " OR ".join('"' + s.replace('"', '""') + '"' for s in stems) or None


def split_sections(text: str) -> list[tuple[str, str]]:
    """(heading path, text) per Markdown section; heading-only sections join the next one."""
    sections: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []
    has_body = False
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading and has_body:
            sections.append((" › ".join(t for _, t in stack), "\n".join(lines).strip()))
            lines, has_body = [], False
        if heading:
            level = len(heading[1])
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading[2]))
        elif line.strip():
            has_body = True
        lines.append(line)
    if "\n".join(lines).strip():
        sections.append((" › ".join(t for _, t in stack), "\n".join(lines).strip()))
    return sections


def split_text(text: str, size: int = CHUNK_SIZE, overlap: int = CHUNK_OVERLAP) -> list[str]:
    """Pieces of at most ~`size` chars, cut at paragraphs, then sentences; `overlap` chars repeat."""
    if len(text) <= size:
        return [text]
    pieces: list[tuple[str, str]] = []  # (separator before the piece, piece)
    for paragraph in re.split(r"\n\s*\n", text):
        for i, sentence in enumerate(_SENTENCE.split(paragraph) if len(paragraph) > size else [paragraph]):
            for j in range(0, len(sentence), size):  # a sentence longer than a chunk is cut hard
                sep = "" if j else ("\n\n" if i == 0 else " ")
                pieces.append((sep, sentence[j : j + size]))
    chunks: list[str] = []
    current = ""
    for sep, piece in pieces:
        if current and len(current) + len(sep) + len(piece) > size:
            chunks.append(current)
            cut = current[-overlap:]
            tail = cut[cut.find(" ") + 1 :] if " " in cut else cut  # start the overlap at a word
            current = tail if len(tail) + len(sep) + len(piece) <= size else ""
        current = f"{current}{sep}{piece}" if current else piece
    chunks.append(current)
    return chunks
