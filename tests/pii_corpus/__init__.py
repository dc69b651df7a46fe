"""A labelled corpus of invented 1C output for the personal-data masker, and its score per kind.

Each file here is what a 1C tool, report or resource could return: printed forms, a staff list, a
counterparty card, a payment order, a turnover sheet (tab-separated), and two `structuredContent`
values (`.json`). Every identifier is invented, with valid check digits. `labels.json` names, per
file, the identifiers that must be masked (`pii`: kind and the value as written) and hard
negatives that must come out as they went in (`negatives`: what it is and the value): document
numbers, КПП, ОГРН, БИК, barcodes, sums, dates, and numbers that pass a checksum by chance.
Everything not labelled `pii` must survive too; `Outcome.unexpected` counts what did not.

    report = score(key=b"corpus")
    report.kinds["inn"].recall, report.false_positives
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from py_server.config import PII_KINDS
from py_server.masking import LABELS, Masker

CORPUS_DIR = Path(__file__).parent
TAG = re.compile(r"\[(?:" + "|".join(LABELS.values()) + r")#[0-9a-f]{4}\]")


@dataclass(frozen=True)
class Document:
    name: str
    content: Any  # the text, or the parsed JSON of a structuredContent value
    pii: tuple[tuple[str, str], ...]
    negatives: tuple[tuple[str, str], ...]

    @property
    def structured(self) -> bool:
        return not isinstance(self.content, str)

    @property
    def text(self) -> str:
        """What the scorer compares: the text itself, or the value as JSON."""
        return self.content if isinstance(self.content, str) else dump(self.content)


def dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def load_corpus() -> list[Document]:
    labels = json.loads((CORPUS_DIR / "labels.json").read_text(encoding="utf-8"))
    documents = []
    for name, label in labels.items():
        raw = (CORPUS_DIR / name).read_text(encoding="utf-8")
        content = json.loads(raw) if name.endswith(".json") else raw
        pii = tuple((kind, value) for kind, value in label["pii"])
        negatives = tuple((what, value) for what, value in label["negatives"])
        documents.append(Document(name, content, pii, negatives))
    return documents


def normalized(kind: str, written: str) -> str:
    """The value as the masker hashes it: digits (a phone as 7 and ten digits), an e-mail in lower case."""
    if kind == "email":
        return written.lower()
    digits = re.sub(r"\D", "", written)
    return "7" + digits[-10:] if kind == "phone" else digits


def mask(masker: Masker, document: Document) -> str:
    counts: Counter[str] = Counter()
    if document.structured:
        return dump(masker.mask_value(document.content, counts))
    return masker.mask_text(document.content, counts)


@dataclass
class KindScore:
    identifiers: int = 0
    caught: int = 0
    false_positives: int = 0  # negatives this kind alone masks

    @property
    def recall(self) -> float:
        return self.caught / self.identifiers if self.identifiers else 1.0


@dataclass
class Report:
    kinds: dict[str, KindScore] = field(default_factory=lambda: {kind: KindScore() for kind in PII_KINDS})
    negatives: int = 0
    false_positives: int = 0  # negatives masked with every kind on
    unexpected: int = 0  # tags beyond the labelled identifiers caught: text masked that nobody labelled
    missed: list[tuple[str, str, str]] = field(default_factory=list)  # (document, kind, value)
    wrongly_masked: list[tuple[str, str, str]] = field(default_factory=list)  # (document, what, value)


def score(key: bytes = b"pii-corpus") -> Report:
    """Recall per kind and false positives over the corpus, with every kind on (and each kind alone)."""
    everything = Masker(PII_KINDS, key=key)
    alone = {kind: Masker([kind], key=key) for kind in PII_KINDS}
    report = Report()
    for document in load_corpus():
        text, masked = document.text, mask(everything, document)
        expected = text
        for kind, value in document.pii:
            tag = everything.tag(kind, normalized(kind, value))
            report.kinds[kind].identifiers += 1
            if value not in masked and tag in masked:
                report.kinds[kind].caught += 1
                expected = expected.replace(value, tag)
            else:
                report.missed.append((document.name, kind, value))
        report.unexpected += max(0, len(TAG.findall(masked)) - len(TAG.findall(expected)))
        report.negatives += len(document.negatives)
        for what, value in document.negatives:
            if masked.count(value) < text.count(value):
                report.false_positives += 1
                report.wrongly_masked.append((document.name, what, value))
        for kind, masker in alone.items():
            only = mask(masker, document)
            report.kinds[kind].false_positives += sum(only.count(v) < text.count(v) for _, v in document.negatives)
    return report
