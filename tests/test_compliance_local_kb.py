"""The local knowledge base: Russian morphology, bm25 order, chunking, incremental build_index,
the shipped documents, and documents in encodings other than UTF-8."""

from __future__ import annotations

import codecs
import itertools
import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from py_server.extras.compliance.chunking import match_expression, split_sections, split_text, tokens
from py_server.extras.compliance.local_kb import (
    SHIPPED_DIR,
    KnowledgeBaseError,
    LocalKnowledgeBase,
    UnreadableDocument,
    build_index,
    decode_document,
    format_stats,
)
from py_server.main import main


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def shipped() -> LocalKnowledgeBase:
    kb = LocalKnowledgeBase(limit=3)
    kb.open()
    return kb


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# --- text --------------------------------------------------------------------------------


def test_stemming_joins_word_forms_and_numerals() -> None:
    assert tokens("повторного ремонта") == tokens("Повторный ремонт") == ["повторн", "ремонт"]
    assert tokens("тридцати дней") == tokens("30 дней") == tokens("тридцать день") == ["30", "день"]
    assert tokens("недостаток") == tokens("недостатка") == tokens("недостатков")
    assert tokens("Ёлка") == tokens("елка")


def test_match_expression_quotes_every_term_and_drops_stop_words() -> None:
    assert match_expression("Что делать в случае повторного ремонта?") == '"случа" OR "повторн" OR "ремонт"'
    assert match_expression('ремонт" OR NEAR(x*') == '"ремонт" OR "or" OR "near" OR "x"'
    assert match_expression("что и в") == '"что" OR "и" OR "в"'  # only stop words: keep them
    assert match_expression("?!…") is None


def test_sections_follow_headings_and_keep_the_path() -> None:
    text = "# Документ\n\n> Справка.\n\n## Первый\nтекст один\n\n## Второй\n### Глубже\nтекст два\n"
    sections = split_sections(text)
    assert [h for h, _ in sections] == ["Документ", "Документ › Первый", "Документ › Второй › Глубже"]
    assert sections[2][1].startswith("## Второй\n### Глубже")  # a heading-only section joins the next


def test_long_text_is_split_at_paragraphs_with_overlap() -> None:
    paragraphs = [f"Абзац {i}. " + "слово " * 60 for i in range(12)]  # ~370 chars each
    chunks = split_text("\n\n".join(paragraphs), size=1500, overlap=300)
    assert len(chunks) > 2
    assert all(len(c) <= 1500 for c in chunks)
    for previous, current in itertools.pairwise(chunks):
        assert current[:40] in previous  # the next chunk starts with the end of the previous one
    assert all(f"Абзац {i}." in "".join(chunks) for i in range(12))


def test_a_huge_sentence_is_cut_hard() -> None:
    chunks = split_text("а" * 4000, size=1500, overlap=300)
    assert all(len(c) <= 1500 for c in chunks) and len(chunks) >= 3


# --- the shipped knowledge base ----------------------------------------------------------------


def test_shipped_documents_exist_with_disclaimer() -> None:
    files = sorted(SHIPPED_DIR.glob("*.md"))
    assert 4 <= len(files) <= 6
    for path in files:
        size = path.stat().st_size
        assert 2_000 <= size <= 6_200, (path.name, size)
        assert "не является юридической консультацией" in path.read_text(encoding="utf-8")


def test_shipped_index_builds_fast() -> None:
    started = time.perf_counter()
    stats = LocalKnowledgeBase().open()
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert stats.documents == len(list(SHIPPED_DIR.glob("*.md")))
    assert stats.chunks >= stats.documents
    assert elapsed_ms < 1000  # typically ~25 ms; generous bound for slow CI machines


def test_repeat_repair_query_finds_the_repeat_repair_passage(shipped: LocalKnowledgeBase) -> None:
    docs = shipped.search("повторный ремонт")
    assert docs[0].metadata["source"].startswith("04_povtornyi_remont")
    assert "повторного ремонта" in " ".join(d.content for d in docs)


@pytest.mark.parametrize("query", ["тридцать дней", "30 дней в году гарантии", "более тридцати дней в ремонте"])
def test_thirty_day_rule_is_found_by_words_or_digits(shipped: LocalKnowledgeBase, query: str) -> None:
    top = shipped.search(query)[0]
    assert top.metadata["source"].startswith("03_30_dney")


@pytest.mark.parametrize(
    ("query", "source"),
    [
        ("неустойка один процент в день", "05_sroki"),
        ("максимальный срок ремонта сорок пять дней", "02_srok_remonta"),
        ("какие документы оформляет дилер: заказ-наряд, акт", "06_dokumenty"),
        ("технически сложный товар перечень", "01_prava"),
    ],
)
def test_topics_land_in_their_documents(shipped: LocalKnowledgeBase, query: str, source: str) -> None:
    assert shipped.search(query)[0].metadata["source"].startswith(source)


def test_scores_are_positive_descending_and_documented(shipped: LocalKnowledgeBase) -> None:
    docs = shipped.search("гарантийный срок повторный ремонт", limit=10)
    scores = [d.relevance_score for d in docs]
    assert len(docs) == 10
    assert all(s is not None and s > 0 for s in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert docs[0].metadata["score_type"] == "bm25" and docs[0].metadata["higher_is_better"] is True


def test_fts_syntax_in_a_query_is_harmless(shipped: LocalKnowledgeBase) -> None:
    for query in ['"', "NEAR(ремонт", "ремонт AND OR NOT", "*", "a:b", "^ремонт", "(", "---"]:
        shipped.search(query)  # must not raise sqlite3.OperationalError


# --- bm25 and build_index on a folder of our own ------------------------------------------------------


def test_bm25_ranks_the_denser_match_first(tmp_path: Path) -> None:
    write(tmp_path, "a.md", "# А\n\nКоробка передач. Коробка передач шумит, коробка передач пинается.\n")
    write(tmp_path, "b.md", "# Б\n\nДвигатель, фары, стёкла и одна коробка передач где-то упомянута вскользь.\n")
    write(tmp_path, "c.md", "# В\n\nПро кондиционер.\n")
    kb = LocalKnowledgeBase(tmp_path, limit=5)
    docs = kb.search("коробки передач")
    assert [d.metadata["source"] for d in docs] == ["a.md", "b.md"]
    assert docs[0].relevance_score > docs[1].relevance_score  # type: ignore[operator]


def test_build_index_refreshes_only_what_changed(tmp_path: Path) -> None:
    source, index = tmp_path / "docs", tmp_path / "idx" / "kb.sqlite"
    source.mkdir()
    write(source, "one.md", "# Один\n\nпро стеклоподъёмник\n")
    write(source, "two.md", "# Два\n\nпро кондиционер\n")
    (source / "sub").mkdir()
    write(source / "sub", "three.txt", "про вариатор\n")
    write(source, "ignored.pdf", "про тормоза")

    first = build_index(source, index)
    assert (first.files_indexed, first.files_unchanged, first.files_removed) == (3, 0, 0)
    assert first.documents == 3 and first.chunks == 3

    again = build_index(source, index)
    assert (again.files_indexed, again.files_unchanged, again.files_removed) == (0, 3, 0)
    assert again.version == first.version

    write(source, "two.md", "# Два\n\nпро кондиционер\n\n## Ещё\n\nпро климат-контроль\n")
    changed = build_index(source, index)
    assert (changed.files_indexed, changed.files_unchanged) == (1, 2)
    assert changed.chunks == 4 and changed.version != first.version

    (source / "one.md").unlink()
    removed = build_index(source, index)
    assert (removed.files_indexed, removed.files_unchanged, removed.files_removed) == (0, 2, 1)
    with sqlite3.connect(index) as conn:
        assert conn.execute("SELECT count(*) FROM chunks WHERE file = 'one.md'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM chunks_fts").fetchone() == (removed.chunks,)

    kb = LocalKnowledgeBase(source, index)
    assert kb.search("стеклоподъёмник") == []
    assert kb.search("климат-контроля")[0].metadata["source"] == "two.md"
    assert kb.search("вариатором")[0].metadata["source"] == "sub/three.txt"
    text = format_stats(removed)
    assert "0 file(s) indexed" in text and "2 unchanged" in text and "1 removed" in text


def test_missing_folder_and_foreign_index_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="does not exist"):
        build_index(tmp_path / "nope", tmp_path / "kb.sqlite")
    junk = write(tmp_path, "junk.sqlite", "this is not a database " * 100)
    with pytest.raises(KnowledgeBaseError, match="MCP_KB_INDEX"):
        build_index(SHIPPED_DIR, junk)
    with pytest.raises(KnowledgeBaseError, match="Cannot open"):
        build_index(SHIPPED_DIR, tmp_path)  # a folder where the index file should be


@pytest.mark.anyio
async def test_async_retrieve_builds_once_and_reports(tmp_path: Path) -> None:
    write(tmp_path, "x.md", "# Икс\n\nгарантийный ремонт подвески\n")
    kb = LocalKnowledgeBase(tmp_path, tmp_path / "kb.sqlite")
    docs = await kb.retrieve("ремонт подвески")
    assert docs and docs[0].metadata["heading"] == "Икс"
    assert (tmp_path / "kb.sqlite").exists()
    assert (await kb.probe()).startswith("1 documents, 1 chunks")
    assert kb.knowledge_base_version.startswith("local-")
    await kb.aclose()
    assert await kb.retrieve("подвеска")  # reopens after close
    await kb.aclose()


# --- documents in other encodings ----------------------------------------------------------------

CLAIM = "Претензия: стеклоподъёмник водительской двери заедает после гарантийного ремонта.\n"
# Not text in any encoding: a PNG signature, then compressed bytes (NULs that are no UTF-16 pattern).
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" + bytes(range(256)) * 8
# No NUL bytes, not UTF-8, and control bytes no code page reads as text.
UNDECODABLE = bytes(range(1, 32)) * 4 + "гарантия".encode("cp1251") + bytes(range(0x80, 0x100))


@pytest.mark.parametrize(
    ("data", "read_as"),
    [
        (CLAIM.encode("cp1251"), "cp1251 (Windows Cyrillic)"),
        (CLAIM.encode("utf-16"), "UTF-16 LE (byte-order mark)"),  # what Notepad calls "Unicode"
        (codecs.BOM_UTF16_BE + CLAIM.encode("utf-16-be"), "UTF-16 BE (byte-order mark)"),
        (CLAIM.encode("utf-16-le"), "UTF-16 LE without a byte-order mark"),
        (CLAIM.encode("koi8_r"), "KOI8-R"),
        (CLAIM.encode("cp866"), "cp866 (DOS Cyrillic)"),
    ],
    ids=["cp1251", "utf-16-le-bom", "utf-16-be-bom", "utf-16-le", "koi8-r", "cp866"],
)
def test_a_russian_text_not_in_utf8_is_decoded_found_and_named(tmp_path: Path, data: bytes, read_as: str) -> None:
    source = tmp_path / "docs"
    source.mkdir()
    (source / "02.txt").write_bytes(data)
    write(source, "01.md", "# Кондиционер\n\nпро кондиционер\n")

    stats = build_index(source, tmp_path / "kb.sqlite")

    assert (stats.files_indexed, stats.documents, stats.skipped) == (2, 2, ())
    assert stats.decoded == (("02.txt", read_as),)  # the UTF-8 file is not mentioned
    assert f"\n  02.txt: read as {read_as}" in format_stats(stats)
    docs = LocalKnowledgeBase(source, tmp_path / "kb.sqlite").search("стеклоподъёмники")
    assert [d.metadata["source"] for d in docs] == ["02.txt"]
    assert "стеклоподъёмник водительской двери" in docs[0].content


def test_binary_and_undecodable_files_are_skipped_by_name_and_the_rest_indexed(tmp_path: Path) -> None:
    source = tmp_path / "docs"
    source.mkdir()
    (source / "scan.txt").write_bytes(BINARY)
    (source / "mystery.txt").write_bytes(UNDECODABLE)
    (source / "claim.txt").write_bytes(CLAIM.encode("cp1251"))
    write(source, "notes.md", "# Кондиционер\n\nпро кондиционер\n")

    stats = build_index(source, tmp_path / "kb.sqlite")

    assert (stats.files_indexed, stats.files_unchanged, stats.documents) == (2, 0, 2)
    assert [name for name, _ in stats.skipped] == ["mystery.txt", "scan.txt"]
    reasons = dict(stats.skipped)
    assert reasons["scan.txt"].startswith("not text: binary data")
    assert reasons["mystery.txt"].startswith("not UTF-8, and its encoding could not be told")
    assert all(reason.endswith("save it as UTF-8") for reason in reasons.values())
    lines = format_stats(stats).splitlines()
    assert "2 file(s) indexed, 0 unchanged, 0 removed, 2 skipped; 2 document(s)" in lines[0]
    assert lines[1:] == [
        "  claim.txt: read as cp1251 (Windows Cyrillic)",
        f"  mystery.txt: skipped, {reasons['mystery.txt']}",
        f"  scan.txt: skipped, {reasons['scan.txt']}",
    ]
    kb = LocalKnowledgeBase(source, tmp_path / "kb.sqlite")
    assert kb.search("кондиционером")[0].metadata["source"] == "notes.md"
    assert kb.search("гарантия стеклоподъёмник")[0].metadata["source"] == "claim.txt"


def test_a_skipped_file_is_reported_on_every_run_and_leaves_the_index(tmp_path: Path) -> None:
    source, index = tmp_path / "docs", tmp_path / "kb.sqlite"
    source.mkdir()
    (source / "claim.txt").write_bytes(CLAIM.encode("cp1251"))
    write(source, "later.txt", "про вариатор\n")
    assert build_index(source, index).decoded == (("claim.txt", "cp1251 (Windows Cyrillic)"),)

    (source / "later.txt").write_bytes(BINARY)  # replaced by a binary file of the same name
    changed = build_index(source, index)
    assert (changed.files_indexed, changed.files_unchanged, changed.documents) == (0, 1, 1)
    assert changed.decoded == () and [name for name, _ in changed.skipped] == ["later.txt"]
    assert LocalKnowledgeBase(source, index).search("вариатор") == []  # its old text left the index

    again = build_index(source, index)
    assert [name for name, _ in again.skipped] == ["later.txt"] and again.version == changed.version
    assert "1 skipped" in format_stats(again) and "later.txt: skipped" in format_stats(again)


def test_an_index_built_before_decoding_is_rebuilt(tmp_path: Path) -> None:
    """Schema 1 indexed cp1251 files as U+FFFD garbage; as "unchanged" files they would stay so."""
    source, index = tmp_path / "docs", tmp_path / "kb.sqlite"
    source.mkdir()
    (source / "claim.txt").write_bytes(CLAIM.encode("cp1251"))
    build_index(source, index)
    with sqlite3.connect(index) as conn:
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    rebuilt = build_index(source, index)
    assert (rebuilt.files_indexed, rebuilt.files_unchanged) == (1, 0)


def test_the_server_logs_each_file_read_otherwise_or_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "claim.txt").write_bytes(CLAIM.encode("utf-16"))
    (tmp_path / "scan.txt").write_bytes(BINARY)
    with caplog.at_level(logging.INFO, logger="py_server.extras.compliance.local_kb"):
        LocalKnowledgeBase(tmp_path).open()
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert records[0][0] == "INFO" and "1 file(s) indexed" in records[0][1] and "1 skipped" in records[0][1]
    assert records[1] == ("INFO", "knowledge base: claim.txt read as UTF-16 LE (byte-order mark)")
    assert records[2][0] == "WARNING" and records[2][1].startswith("knowledge base: scan.txt skipped, not text")
    assert len(records) == 3


def test_kb_index_prints_what_it_did_with_each_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "01.md").write_text("# Ремонт\n\nпро ремонт\n", encoding="utf-8")
    (docs / "02.txt").write_bytes(CLAIM.encode("cp1251"))
    (docs / "03.txt").write_bytes(CLAIM.encode("utf-16"))
    (docs / "04.txt").write_bytes(BINARY)
    assert main(["kb", "index", str(docs), "--output", str(tmp_path / "kb.sqlite3")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "3 file(s) indexed, 0 unchanged, 0 removed, 1 skipped" in out[0]
    assert out[1:3] == ["  02.txt: read as cp1251 (Windows Cyrillic)", "  03.txt: read as UTF-16 LE (byte-order mark)"]
    assert out[3].startswith("  04.txt: skipped, not text: binary data") and len(out) == 4


@pytest.mark.parametrize(
    ("data", "text", "read_as"),
    [
        ("ремонт".encode(), "ремонт", None),
        (codecs.BOM_UTF8 + "ремонт".encode(), "ремонт", None),
        (b"", "", None),
        ("ремонт двери".encode()[:-1], "ремонт двер", "UTF-8, its incomplete last character left out"),
        (
            "ремонт двери, ".encode() * 2 + b"\xff" + "ремонт двери".encode(),
            "ремонт двери, ремонт двери, \ufffdремонт двери",
            "UTF-8, 1 invalid byte sequence(s) replaced",
        ),
        (
            codecs.BOM_UTF16_LE + "ремонт".encode("utf-16-le") + b"\x04",
            "ремонт",
            "UTF-16 LE (byte-order mark), its incomplete last character left out",
        ),
        ("ремонт".encode("utf-32"), "ремонт", "UTF-32 LE (byte-order mark)"),
        ("Prüfung für Käufer".encode("cp1252"), "Prüfung für Käufer", "cp1252 (Windows Latin)"),
    ],
    ids=[
        "utf-8",
        "utf-8-bom",
        "empty",
        "utf-8-cut-short",
        "utf-8-stray-byte",
        "utf-16-cut-short",
        "utf-32-bom",
        "cp1252",
    ],
)
def test_decode_document(data: bytes, text: str, read_as: str | None) -> None:
    assert decode_document(data) == (text, read_as)


def test_nul_bytes_in_utf8_are_not_text() -> None:
    with pytest.raises(UnreadableDocument, match="binary data"):
        decode_document("ремонт\x00".encode())


def test_utf8_documents_do_not_load_the_encoding_detector(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; "
        "from py_server.extras.compliance.local_kb import SHIPPED_DIR, build_index; "
        f"build_index(SHIPPED_DIR, Path({str(tmp_path / 'kb.sqlite')!r})); "
        "print('charset_normalizer' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"
