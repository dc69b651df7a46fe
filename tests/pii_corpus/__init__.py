"""A labelled corpus of invented 1C output for the personal-data masker, and its score per kind.

Each file here is what a 1C tool, report or resource could return: printed forms, a staff list, a
counterparty card, a payment order, a turnover sheet (tab-separated), an order, cash orders, a list
of users, a client's history, a goods receipt, and `structuredContent` values (`.json`). Every
identifier is invented, with valid check digits. `labels.json` names, per file, the identifiers
that must be masked (`pii`: kind and the value as written, full names as kind `names`) and hard
negatives that must come out as they went in (`negatives`: what it is and the value): document
numbers, КПП, ОГРН, БИК, barcodes, sums, dates, and numbers that pass a checksum by chance; and,
for names, `name_negatives`: organisations, banks, products, streets and cities (some named after
people), positions, headers. Everything not labelled `pii` must survive too; `Report.unexpected`
counts what did not. Files 13 to 18 were written and labelled before the names kind was run on
them, to check rules made with the other files: 13 to 15 before the last two rules for names, 16 to
18 after them.

    report = score(key=b"corpus")                      # the kinds of `all`; names need natasha
    report.kinds["inn"].recall, report.false_positives
    score(kinds=(*PII_KINDS, NAMES_KIND)).kinds["names"].precision
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from py_server.config import NAMES_KIND, PII_KINDS
from py_server.masking import LABELS, Masker
from py_server.masking_names import normalized_name

CORPUS_DIR = Path(__file__).parent
TAG = re.compile(r"\[(?:" + "|".join(LABELS.values()) + r")#[0-9a-f]+\]")


@dataclass(frozen=True)
class Document:
    name: str
    content: Any  # the text, or the parsed JSON of a structuredContent value
    pii: tuple[tuple[str, str], ...]
    negatives: tuple[tuple[str, str], ...]
    name_negatives: tuple[tuple[str, str], ...] = ()

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
        name_negatives = tuple((what, value) for what, value in label.get("name_negatives", ()))
        documents.append(Document(name, content, pii, negatives, name_negatives))
    return documents


def normalized(kind: str, written: str) -> str:
    """The value as the masker hashes it: digits (a phone as 7 and ten digits), an e-mail in lower case."""
    if kind == "email":
        return written.lower()
    if kind == NAMES_KIND:
        return normalized_name(written)
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
    negatives: int = 0  # the hard negatives of this kind: `negatives`, or `name_negatives` for names
    false_positives: int = 0  # of those, the ones this kind alone masks
    tags: int = 0  # the tags this kind alone puts in the corpus
    unexpected: int = 0  # of those, the ones that stand for no labelled value: text masked that should not be

    @property
    def recall(self) -> float:
        return self.caught / self.identifiers if self.identifiers else 1.0

    @property
    def precision(self) -> float:
        """The share of this kind's tags that stand for a labelled value."""
        return (self.tags - self.unexpected) / self.tags if self.tags else 1.0


@dataclass
class Report:
    kinds: dict[str, KindScore]
    negatives: int = 0  # both lists
    false_positives: int = 0  # negatives of both lists masked with every kind on
    unexpected: int = 0  # tags beyond the labelled identifiers caught: text masked that nobody labelled
    missed: list[tuple[str, str, str]] = field(default_factory=list)  # (document, kind, value)
    wrongly_masked: list[tuple[str, str, str]] = field(default_factory=list)  # (document, what, value)


def _lost(value: str, text: str, masked: str) -> bool:
    """Whether some occurrence of `value` was masked. Tags are left out of the count: "ФИО" is in `[ФИО#a1f3c9]`."""
    return TAG.sub("", masked).count(value) < text.count(value)


def score(key: bytes = b"pii-corpus", kinds: tuple[str, ...] = PII_KINDS) -> Report:
    """Recall per kind and false positives over the corpus, with `kinds` on (and each kind alone).

    Labels of kinds not in `kinds` are ignored, their values left as they are: `names` needs natasha.
    """
    everything = Masker(kinds, key=key)
    alone = {kind: Masker([kind], key=key) for kind in kinds}
    report = Report({kind: KindScore() for kind in kinds})
    for document in load_corpus():
        text, masked = document.text, mask(everything, document)
        expected = text
        pii = [(kind, value) for kind, value in document.pii if kind in kinds]
        for kind, value in pii:
            tag = everything.tag(kind, normalized(kind, value))
            report.kinds[kind].identifiers += 1
            if value not in masked and tag in masked:
                report.kinds[kind].caught += 1
                expected = expected.replace(value, tag)
            else:
                report.missed.append((document.name, kind, value))
        report.unexpected += max(0, len(TAG.findall(masked)) - len(TAG.findall(expected)))
        negatives = document.negatives + document.name_negatives
        report.negatives += len(negatives)
        for what, value in negatives:
            if _lost(value, text, masked):
                report.false_positives += 1
                report.wrongly_masked.append((document.name, what, value))
        for kind, masker in alone.items():
            only, figures = mask(masker, document), report.kinds[kind]
            own = document.name_negatives if kind == NAMES_KIND else document.negatives
            figures.negatives += len(own)
            figures.false_positives += sum(_lost(value, text, only) for _, value in own)
            labelled = {masker.tag(kind, normalized(kind, value)) for k, value in pii if k == kind}
            tags = TAG.findall(only)
            figures.tags += len(tags)
            figures.unexpected += sum(tag not in labelled for tag in tags)
    return report
