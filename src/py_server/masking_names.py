"""Full names (ФИО), the `names` kind of MCP_MASK_PII: found by natasha's named-entity recogniser.

natasha (`pip install "onec-mcp-proxy[pii-names]"`) runs locally: its wheel carries the model, so
no text leaves the machine and nothing is downloaded at run time. It is imported only when `names`
is enabled, as loading its models takes 1 to 1.5 s and about 200 MB of memory.

The recogniser is asked about one line, or one table cell, at a time: a whole document gives it
spans across lines ("Банк»\\nБИК 045004763") and, in a Markdown table, misses names it finds in the
cell alone. Only its PER spans count (organisations and places stay), and never a span that
touches a tag of another kind (`[ИНН#a1f3c9]`), which is masked before names.

A sole trader ("ИП Григорьев Максим Олегович") is often an organisation to the recogniser; the name
after "ИП" is taken by its shape instead.

A name of one word is where the recogniser errs: it calls a capitalised common word a person
("Справочник.Контрагенты — Контрагенты", "Приходный кассовый ордер"). In a line, such a word is a
name only if natasha's morphology tagger, from the same wheel, calls it a proper noun there. A lone
word with nothing around it (a table cell, a dict value) gives neither model any context, and both
call most capitalised ones a person: "Штрихкод", "Кладовщик". Such a word is a name only when its
dict key or column header names a person (`"Менеджер": "Ершов"`).

    finder = NameFinder()                              # loads the model, once per process
    finder.spans("Контактное лицо: Кузнецов Павел Андреевич, моб. [ТЕЛЕФОН#09b24f]")   # [(17, 41)]
    finder.spans("Ершов", person=names_a_person("Менеджер"))                         # [(0, 5)]
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from .errors import ConfigError

EXTRA = "natasha"
EXTRA_MISSING = 'MCP_MASK_PII=names needs the optional extra: pip install "onec-mcp-proxy[pii-names]"'

# A tag of any kind: names are looked for after the other kinds, and never inside their tags.
_TAG = re.compile(r"\[[^\W\d_]+#[0-9a-f]+\]")
# A name starts with a capital letter. Lines without a capitalised Cyrillic word (numbers, sums,
# dates, Latin text) are not worth a call of the recogniser, which costs about a millisecond.
_CAPITALISED = re.compile(r"[А-ЯЁ][а-яё]")
# What may stand between two PER spans of one name: "Лебедевой | Нине Константиновне" comes back as two.
_JOINER = re.compile(r"\s+")
# One word, no initials: "Смирнова", "Контрагенты", "Водитель-экспедитор" (not "Иванов И.", "А. С.").
_ONE_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
# A sole trader's name is a person's name, but the recogniser often calls "ИП Григорьев Максим Олегович"
# an organisation: after "ИП", a surname with a first name (and patronymic) or initials is taken as a name.
_WORD = r"[А-ЯЁ][а-яё]+(?:-[А-ЯЁ][а-яё]+)?"
_INITIALS = r"[А-ЯЁ]\.\s?(?:[А-ЯЁ]\.)?"
_SOLE_TRADER = re.compile(
    rf"(?<![^\W\d_])(?:ИП|[Ии]ндивидуальн[а-яё]+ предпринимател[а-яё]+)\s+(?P<name>{_WORD}(?:\s+{_WORD}){{1,2}}"
    rf"|{_WORD}\s+{_INITIALS}|{_INITIALS}\s?{_WORD})(?![^\W\d_])"
)
# What may surround a lone word in a cell or a value and still leave it alone: spaces, punctuation.
_AROUND = re.compile(r"[\s\W_]*")
# Dict keys and column headers (as lower-case words) whose value is a person; a key that names
# something else a person has ("Должность Сотрудника", "Адрес Руководителя") does not count.
_PERSON_KEY = re.compile(
    r"(?<![а-яё])(?:фио|фамили[яи]|имя|отчеств|сотрудник|работник|физ[а-яё]* лиц|физлиц|контактн[а-яё]* лиц"
    r"|руководител|директор|бухгалтер|ответственн|кассир|менеджер|кладовщик|водител|исполнител|автор|подписант"
    r"|представител|пользовател)"
)
_NOT_PERSON_KEY = re.compile(
    r"(?<![а-яё])(?:должност|професси|специальност|подразделени|отдел|организаци|адрес|телефон|почт|email"
    r"|дата|номер|код|инн|снилс|паспорт|сч[её]т|карт)"
)
_CACHED_LENGTH = 200
_CACHE_SIZE = 4096
Span = tuple[int, int]


def extra_installed() -> bool:
    """Whether natasha can be imported, without importing it (that alone takes most of a second)."""
    return importlib.util.find_spec(EXTRA) is not None


def require_extra() -> None:
    """Raises ConfigError, one line that says what to install, when natasha is not installed."""
    if not extra_installed():
        raise ConfigError(EXTRA_MISSING)


@dataclass(frozen=True)
class _Models:
    recognise: Any  # .map(texts) -> a markup per text, with .spans (start, stop, type)
    tag_morphology: Callable[[list[str]], Any]  # words -> markup with .tokens (text, pos)
    tokenize: Callable[[str], Iterable[Any]]  # text -> tokens with start, stop, text


@cache
def _models() -> _Models:
    """natasha's news NER and morphology taggers, loaded once per process however many maskers there are."""
    try:
        from natasha import NewsEmbedding, NewsMorphTagger, NewsNERTagger
        from razdel import tokenize
    except ImportError as exc:  # installed but broken, e.g. a numpy built for another Python
        raise ConfigError(f"{EXTRA_MISSING} ({exc})") from None
    embedding = NewsEmbedding()  # the word vectors both taggers share: most of the memory and load time
    return _Models(NewsNERTagger(embedding), NewsMorphTagger(embedding), tokenize)


def may_hold_a_name(text: str) -> bool:
    """Whether `text` has a capitalised Cyrillic word, without which the recogniser finds no name."""
    return _CAPITALISED.search(text) is not None


@lru_cache(maxsize=1024)  # keys and headers are a result's schema: they repeat in every row
def names_a_person(hint: str) -> bool:
    """Whether a dict key or column header (as words: "Контактное Лицо") says its value is a person."""
    lowered = hint.lower()
    return _PERSON_KEY.search(lowered) is not None and _NOT_PERSON_KEY.search(lowered) is None


def normalized_name(name: str) -> str:
    """The name as its tag hashes it: "Иванов  Иван" and "ИВАНОВ Иван" get one tag, "Иванов И." another."""
    return " ".join(name.split()).casefold()


class NameFinder:
    """The spans of full names in lines of text. The models are shared by every finder of the process."""

    def __init__(self) -> None:
        require_extra()
        # At construction, that is at start-up: the second it takes is spent before the first client
        # connects, not on its first tool call, and a broken install stops the proxy at once (exit 2).
        self._models = _models()
        # Table cells and dict values repeat from row to row (a counterparty, a product, a position):
        # the recogniser sees each distinct one once per finder, whatever the number of rows. Longer
        # lines are seldom repeated and would make the cache large. A lock, as a caller may mask in threads.
        self._known: OrderedDict[str, list[Span]] = OrderedDict()
        self._lock = threading.Lock()

    def spans(self, text: str, *, person: bool = False) -> list[Span]:
        """(start, stop) of each full name in `text`, in order; none inside or across a tag of another kind.

        `person`: the key or header above `text` names a person, so a lone word in it may be a name.
        """
        return self.spans_of([(text, person)])[0]

    def spans_of(self, texts: Sequence[tuple[str, bool]]) -> list[list[Span]]:
        """`spans(text, person=person)` of each, with one call of the recogniser for all the texts it has not
        seen: a batch costs about a third as much per line as lines one at a time."""
        found = self._find([text for text, _ in texts])
        return [self._unless_alone(text, found[text], person) for text, person in texts]

    def prepare(self, texts: Iterable[str]) -> None:
        """Look for names in `texts` in one batch now, so that `spans` finds them known later."""
        self._find([text for text in texts if len(text) <= _CACHED_LENGTH])

    def forget(self) -> None:
        """Drop the texts seen so far, so the next are looked at afresh (what a benchmark of unseen text needs)."""
        with self._lock:
            self._known.clear()

    def _find(self, texts: Iterable[str]) -> dict[str, list[Span]]:
        found: dict[str, list[Span]] = {}
        unseen: list[str] = []
        with self._lock:
            for text in texts:
                if text in found:
                    continue
                if not may_hold_a_name(text):
                    found[text] = []
                elif text in self._known:
                    found[text] = self._known[text]
                    self._known.move_to_end(text)
                else:
                    found[text] = []
                    unseen.append(text)
        if not unseen:
            return found
        for text, markup in zip(unseen, self._models.recognise.map(unseen), strict=True):
            found[text] = self._names(text, markup.spans)
        with self._lock:
            for text in unseen:
                if len(text) <= _CACHED_LENGTH:
                    self._known[text] = found[text]
            while len(self._known) > _CACHE_SIZE:
                self._known.popitem(last=False)
        return found

    @staticmethod
    def _unless_alone(text: str, found: list[Span], person: bool) -> list[Span]:
        """`found`, less a lone word that is all of `text`, unless the key above it names a person."""
        if person or len(found) != 1:
            return found
        start, stop = found[0]
        lone = " " not in text[start:stop] and _AROUND.fullmatch(text[:start]) and _AROUND.fullmatch(text, stop)
        return [] if lone else found

    def _names(self, text: str, spans: Iterable[Any]) -> list[Span]:
        """The PER spans of the recogniser, joined where it split a name, and checked where it errs."""
        found: list[Span] = []
        for span in spans:
            if span.type != "PER":
                continue
            if found and _JOINER.fullmatch(text, found[-1][1], span.start):
                found[-1] = (found[-1][0], span.stop)  # "Лебедевой" + "Нине Константиновне": one name
            else:
                found.append((span.start, span.stop))
        for trader in _SOLE_TRADER.finditer(text):
            start, stop = trader.span("name")
            if not any(a < stop and start < b for a, b in found):
                found.append((start, stop))
        found.sort()
        tags = [tag.span() for tag in _TAG.finditer(text)]
        found = [(start, stop) for start, stop in found if not any(a < stop and start < b for a, b in tags)]
        single = [span for span in found if _ONE_WORD.fullmatch(text, *span)]
        if single:  # rare, so the morphology tagger runs only then (about 1 ms)
            proper = self._proper_nouns(text)
            found = [span for span in found if span not in single or span in proper]
        return found

    def _proper_nouns(self, text: str) -> set[Span]:
        """The spans of the words of `text` that the morphology tagger, in their context, calls PROPN."""
        tokens = list(self._models.tokenize(text))
        words = self._models.tag_morphology([token.text for token in tokens]).tokens
        return {(token.start, token.stop) for token, word in zip(tokens, words, strict=True) if word.pos == "PROPN"}
