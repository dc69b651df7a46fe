"""The offline knowledge base: SQLite FTS5 over stemmed chunks of local Markdown/text files.

No cloud account, no model weights: documents are cut into ~1500-character chunks (300 of overlap,
split at headings and paragraphs first), a Russian Snowball-stemmed copy of each chunk is indexed,
and a query is the OR of its stemmed words, ranked by bm25().

    stats = build_index(Path("docs"), Path("kb.sqlite"))   # what `onec-mcp-proxy kb index` runs
    kb = LocalKnowledgeBase()                              # the shipped documents, in memory
    await kb.warm_up()                                     # optional: build it in the background now
    documents = await kb.retrieve("повторный ремонт")

Files are read as UTF-8 (with or without a BOM) or as UTF-16/32 with a BOM. Any other file is
handed to charset-normalizer, which may only choose between the encodings Russian documents made on
Windows come in (cp1251, koi8-r, cp866, UTF-16/32 without a BOM, and cp1252 for Latin text); a file
it cannot tell, or one that is binary, is skipped. The stats name every file read in another encoding
and every file skipped, with the reason.

sqlite3, the stemmer and charset-normalizer are imported by the first build (charset-normalizer only
for a file that is not UTF-8), not with this module: a proxy builds the index in the background once
it serves, never before.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import logging
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import ProxyError
from .chunking import match_expression, split_sections, split_text, tokens
from .models import RagDocument

if TYPE_CHECKING:
    import sqlite3

logger = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "knowledge_base"
# Bump when decoding, chunking or stemming changes: an old index is then rebuilt whole.
# 2: files in cp1251/UTF-16... are decoded, not indexed as U+FFFD garbage (which "unchanged" would keep).
SCHEMA_VERSION = "2"
_SUFFIXES = (".md", ".txt")
# Byte-order marks, longest first (the UTF-32 LE mark begins with the UTF-16 LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32 LE"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32 BE"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)
# What charset-normalizer may choose from, most likely first (it keeps this order on a tie, e.g. a
# single word that reads as Russian in all three Cyrillic code pages). Any other answer of a free
# detector was wrong in tests more often than right: koi8-r text came back as Shift_JIS, cp1251 with
# English words as cp1250.
_SINGLE_BYTE = ("cp1251", "koi8_r", "cp866", "cp1252")
_WIDE = ("utf_16_le", "utf_16_be", "utf_32_le", "utf_32_be")  # text with NUL bytes and no BOM
_NAMES = {
    "cp1251": "cp1251 (Windows Cyrillic)",
    "koi8_r": "KOI8-R",
    "cp866": "cp866 (DOS Cyrillic)",
    "cp1252": "cp1252 (Windows Latin)",
    "utf_16_le": "UTF-16 LE without a byte-order mark",
    "utf_16_be": "UTF-16 BE without a byte-order mark",
    "utf_32_le": "UTF-32 LE without a byte-order mark",
    "utf_32_be": "UTF-32 BE without a byte-order mark",
}
_NOT_TEXT = frozenset(("Cc", "Co", "Cn", "Cs"))  # control, private use, unassigned, surrogate
_IF_TEXT = "if it is a text document, save it as UTF-8"


class KnowledgeBaseError(ProxyError):
    """The local knowledge base cannot be built or read. The text says what to do."""


class UnreadableDocument(ValueError):
    """A document that is not text, or whose encoding cannot be told; the text says why."""


def decode_document(data: bytes) -> tuple[str, str | None]:
    """The text of a document, and how it was read when that was not plain UTF-8 (None when it was).

    Raises:
        UnreadableDocument: binary data, or not UTF-8 and no encoding that reads as text.
    """
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            body = data[len(bom) :]
            if codec == "utf-8":
                return _decode_utf8(body)
            decoder = codecs.getincrementaldecoder(codec)()
            try:  # not final: a file cut short ends in half a character, which is left out
                text = decoder.decode(body, final=False)
            except UnicodeDecodeError:
                continue  # "FF FE 00 00" that is UTF-16 after all, or binary data that begins like a BOM
            if _looks_like_text(text):
                cut = ", its incomplete last character left out" if decoder.getstate()[0] else ""
                return text, f"{label} (byte-order mark){cut}"
    if b"\x00" not in data:
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            pass
        if _mostly_utf8(data):
            return _decode_utf8(data)
    return _detect(data)


def _decode_utf8(data: bytes) -> tuple[str, str | None]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:  # not final: a file cut short ends in half a letter, which is left out
        text = decoder.decode(data, final=False)
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        return text, f"UTF-8, {text.count(chr(0xFFFD))} invalid byte sequence(s) replaced"
    return text, ("UTF-8, its incomplete last character left out" if decoder.getstate()[0] else None)


def _mostly_utf8(data: bytes) -> bool:
    """A UTF-8 file with a few broken bytes (cut in the middle of a letter, one stray byte), not a
    file in a single-byte code page, where hardly any non-ASCII letter makes a valid UTF-8 sequence."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(data, final=False)
    broken = text.count("\ufffd")
    good = sum(1 for ch in text if ord(ch) > 0x7F) - broken
    return broken * 20 <= good  # a cut last letter (left in the decoder) does not count


def _detect(data: bytes) -> tuple[str, str | None]:
    wide = b"\x00" in data  # NUL bytes: UTF-16/32 without a BOM, or not text at all
    import charset_normalizer  # ~50 ms to import: only ever for a file that is not UTF-8

    best = charset_normalizer.from_bytes(data, cp_isolation=list(_WIDE if wide else _SINGLE_BYTE)).best()
    text = str(best) if best is not None else ""
    if best is None or not _looks_like_text(text):
        if wide:
            raise UnreadableDocument(f"not text: binary data (NUL bytes that do not read as UTF-16); {_IF_TEXT}")
        raise UnreadableDocument(
            f"not UTF-8, and its encoding could not be told (tried cp1251, KOI8-R, cp866, cp1252); {_IF_TEXT}"
        )
    return text, _NAMES.get(best.encoding, best.encoding)


def _looks_like_text(text: str) -> bool:
    """Some letters, and (nearly) no control characters but line breaks and tabs, private-use or
    unassigned code points: what binary data read as UTF-16 or a code page is full of."""
    if not any(ch.isalpha() for ch in text):
        return False
    odd = sum(1 for ch in text if ch not in "\t\n\r\f\v" and unicodedata.category(ch) in _NOT_TEXT)
    return odd * 100 <= len(text)


@dataclass(frozen=True)
class IndexStats:
    source_dir: Path
    index: str  # file path or ":memory:"
    files_indexed: int
    files_unchanged: int
    files_removed: int
    chunks: int  # chunks in the index after the refresh
    documents: int  # files in the index after the refresh
    version: str
    elapsed_ms: float
    # (file, encoding) for each file indexed now that was not plain UTF-8, e.g. ("02.txt", "cp1251 (...)")
    decoded: tuple[tuple[str, str], ...] = ()
    # (file, reason) for each file left out of the index: binary, or an encoding that cannot be told
    skipped: tuple[tuple[str, str], ...] = ()


def format_stats(stats: IndexStats) -> str:
    """One summary line, then one line for each file read in another encoding or skipped."""
    return "\n".join([_summary(stats), *_file_lines(stats)])


def _summary(stats: IndexStats) -> str:
    skipped = f", {len(stats.skipped)} skipped" if stats.skipped else ""
    return (
        f"Knowledge base {stats.source_dir} -> {stats.index}: {stats.files_indexed} file(s) indexed, "
        f"{stats.files_unchanged} unchanged, {stats.files_removed} removed{skipped}; {stats.documents} document(s), "
        f"{stats.chunks} chunk(s), version {stats.version}, {stats.elapsed_ms:.1f} ms"
    )


def _file_lines(stats: IndexStats) -> list[str]:
    lines = [f"  {name}: read as {encoding}" for name, encoding in stats.decoded]
    return lines + [f"  {name}: skipped, {reason}" for name, reason in stats.skipped]


def _connect(target: str) -> sqlite3.Connection:
    import sqlite3

    try:
        conn = sqlite3.connect(target, check_same_thread=False)  # used from worker threads, locked
        conn.executescript(
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS files(name TEXT PRIMARY KEY, sha256 TEXT NOT NULL, chunks INTEGER);"
            "CREATE TABLE IF NOT EXISTS chunks(id INTEGER PRIMARY KEY, file TEXT NOT NULL,"
            " position INTEGER NOT NULL, heading TEXT NOT NULL, content TEXT NOT NULL);"
            "CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file);"
        )
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is not None and row[0] != SCHEMA_VERSION:  # older decoding/chunking/stemming: start over
            conn.executescript("DROP TABLE IF EXISTS chunks_fts; DELETE FROM chunks; DELETE FROM files;")
        # Column 0: the stemmed heading path (weighted up in bm25), column 1: the stemmed text.
        conn.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(title, body,"
            " tokenize='unicode61 remove_diacritics 0')"
        )
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        conn.commit()
    except sqlite3.OperationalError as exc:
        if "fts5" in str(exc).lower():
            raise KnowledgeBaseError(
                f"SQLite {sqlite3.sqlite_version} in this Python has no FTS5 module, which the local "
                "knowledge base needs: use a Python build with FTS5 (python.org, Debian/Ubuntu packages "
                "have it) or set MCP_RAG_BACKEND=managed/off"
            ) from None
        raise KnowledgeBaseError(f"Cannot open the knowledge base index {target}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise KnowledgeBaseError(
            f"{target} is not a knowledge base index ({exc}): point MCP_KB_INDEX to another file"
        ) from None
    return conn


def _source_files(source_dir: Path) -> dict[str, Path]:
    if not source_dir.is_dir():
        raise KnowledgeBaseError(
            f"Knowledge base folder {source_dir} does not exist (check MCP_KB_DIR or the folder given to `kb index`)"
        )
    files = (p for p in source_dir.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES)
    return {p.relative_to(source_dir).as_posix(): p for p in sorted(files)}


def _refresh(conn: sqlite3.Connection, source_dir: Path, index: str) -> IndexStats:
    """Re-index new and changed files (by SHA-256), drop removed ones; one transaction."""
    started = time.perf_counter()
    files = _source_files(source_dir)
    known = dict(conn.execute("SELECT name, sha256 FROM files").fetchall())
    indexed = unchanged = 0
    decoded: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    with conn:
        for name in known.keys() - files.keys():
            _drop(conn, name)
        for name, path in files.items():
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if known.get(name) == digest:
                unchanged += 1
                continue
            _drop(conn, name)  # also when it cannot be read now: its old text is gone
            try:
                text, encoding = decode_document(data)
            except UnreadableDocument as exc:
                skipped.append((name, str(exc)))
                continue
            if encoding is not None:
                decoded.append((name, encoding))
            count = _insert(conn, name, text)
            conn.execute("INSERT INTO files VALUES (?, ?, ?)", (name, digest, count))
            indexed += 1
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('source_dir', ?)", (str(source_dir),))
    rows = conn.execute("SELECT name, sha256, chunks FROM files ORDER BY name").fetchall()
    version = "local-" + hashlib.sha256(repr(rows).encode()).hexdigest()[:12]
    return IndexStats(
        source_dir=source_dir,
        index=index,
        files_indexed=indexed,
        files_unchanged=unchanged,
        files_removed=len(known.keys() - files.keys()),
        chunks=sum(r[2] for r in rows),
        documents=len(rows),
        version=version,
        elapsed_ms=(time.perf_counter() - started) * 1000,
        decoded=tuple(decoded),
        skipped=tuple(skipped),
    )


def _drop(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE file = ?)", (name,))
    conn.execute("DELETE FROM chunks WHERE file = ?", (name,))
    conn.execute("DELETE FROM files WHERE name = ?", (name,))


def _insert(conn: sqlite3.Connection, name: str, text: str) -> int:
    position = 0
    for heading, section in split_sections(text):
        for chunk in split_text(section):
            cursor = conn.execute(
                "INSERT INTO chunks(file, position, heading, content) VALUES (?, ?, ?, ?)",
                (name, position, heading, chunk),
            )
            title = " ".join(tokens(heading))
            conn.execute(
                "INSERT INTO chunks_fts(rowid, title, body) VALUES (?, ?, ?)",
                (cursor.lastrowid, title, " ".join(tokens(chunk))),
            )
            position += 1
    return position


def _build(target: str, source_dir: Path) -> tuple[sqlite3.Connection, IndexStats]:
    """Open the index `target` (a file or ":memory:") and refresh it from `source_dir`."""
    import sqlite3

    try:
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(target)
    except OSError as exc:
        raise KnowledgeBaseError(f"Cannot create the knowledge base index {target}: {exc}") from None
    try:
        return conn, _refresh(conn, source_dir, target)
    except (sqlite3.Error, OSError) as exc:  # a read-only index file, an unreadable document
        conn.close()
        raise KnowledgeBaseError(f"Cannot index {source_dir} into {target}: {exc}") from None
    except BaseException:
        conn.close()
        raise


def build_index(source_dir: Path, index_path: Path) -> IndexStats:
    """Build or refresh the index file `index_path` from the documents in `source_dir`.

    Only new and changed files are re-indexed; files gone from `source_dir` leave the index.

    Raises:
        KnowledgeBaseError: no such folder, no FTS5, `index_path` is not an index or not writable.
    """
    conn, stats = _build(str(index_path), source_dir)
    conn.close()
    return stats


def _log_stats(stats: IndexStats) -> None:
    """format_stats as log records: the summary, then one record per file (a warning if skipped)."""
    logger.info("%s", _summary(stats))
    for name, encoding in stats.decoded:
        logger.info("knowledge base: %s read as %s", name, encoding)
    for name, reason in stats.skipped:
        logger.warning("knowledge base: %s skipped, %s", name, reason)


class LocalKnowledgeBase:
    backend = "local"
    data_source = "local_kb"
    open_world = False

    def __init__(self, source_dir: Path | None = None, index_path: Path | None = None, *, limit: int = 3):
        self.source_dir = source_dir or SHIPPED_DIR
        self.index_path = index_path
        self.limit = limit
        self.stats: IndexStats | None = None
        self._conn: sqlite3.Connection | None = None
        self._open_lock = asyncio.Lock()
        self._db_lock = threading.Lock()  # one connection, used from worker threads

    @property
    def knowledge_base_version(self) -> str:
        return self.stats.version if self.stats else "local"

    def open(self) -> IndexStats:
        """Build (in memory) or refresh (MCP_KB_INDEX) the index; blocking. Raises KnowledgeBaseError."""
        with self._db_lock:
            if self._conn is None or self.stats is None:
                target = str(self.index_path) if self.index_path else ":memory:"
                self._conn, self.stats = _build(target, self.source_dir)
                _log_stats(self.stats)
            return self.stats

    async def ensure_open(self) -> IndexStats:
        async with self._open_lock:  # concurrent first calls (and the warm-up) wait for one build
            return self.stats if self.stats and self._conn else await asyncio.to_thread(self.open)

    async def warm_up(self) -> None:
        """Build the index in a worker thread now, so that the first call finds it ready; a call
        made meanwhile waits for this build. Never raises: a failure is logged here, and the next
        call tries again and reports it."""
        try:
            await self.ensure_open()
        except KnowledgeBaseError as exc:
            logger.warning("local knowledge base: %s", exc)

    def search(self, query: str, limit: int | None = None) -> list[RagDocument]:
        """Best chunks first (bm25); blocking. relevance_score = -bm25, higher is better."""
        expression = match_expression(query)
        if expression is None:
            return []
        self.open()
        with self._db_lock:
            assert self._conn is not None
            rows = self._conn.execute(
                "SELECT c.id, c.file, c.heading, c.position, c.content, bm25(chunks_fts, 3.0, 1.0) AS score"
                " FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid"
                " WHERE chunks_fts MATCH ? ORDER BY score, c.id LIMIT ?",
                (expression, limit or self.limit),
            ).fetchall()
        # bm25() is "more negative is better"; report -bm25 so that higher is better, and say so.
        explain = {"score_type": "bm25", "higher_is_better": True}
        return [
            RagDocument(
                content=content,
                metadata={"source": file, "heading": heading, "position": position, "chunk_id": chunk_id} | explain,
                relevance_score=round(-score, 6),
            )
            for chunk_id, file, heading, position, content, score in rows
        ]

    async def retrieve(self, query: str) -> list[RagDocument]:
        await self.ensure_open()
        return await asyncio.to_thread(self.search, query)

    async def probe(self) -> str:
        stats = await self.ensure_open()
        where = stats.index if stats.index != ":memory:" else "in memory"
        return f"{stats.documents} documents, {stats.chunks} chunks (index {where}, {stats.version})"

    async def aclose(self) -> None:
        with self._db_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn, self.stats = None, None
