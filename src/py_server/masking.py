"""Personal-data masking (152-ФЗ): identifiers in what the proxy returns become `[ИНН#a1f3c9]` tags.

A `Masker` knows the kinds enabled by `MCP_MASK_PII` and walks every text a client receives: text
content items, embedded text resources, each string of `structuredContent`, resource texts and
prompt message texts. Base64 blobs, images and audio are never touched.

Precision matters as much as recall, because a masked document number is lost to the model:

* a checksum where the identifier has one: ИНН (10 and 12 digits), СНИЛС, card numbers (Luhn plus
  the networks' prefixes and lengths), bank accounts (the Bank of Russia control key against a BIC
  found in the same result);
* a context word right before the value (`ИНН`, `тел.`, `паспорт`, `р/с`, ...) or a dict key that
  names it (`{"ИНН": "..."}`) where the checksum is weak or missing: a 10-digit ИНН, a bare
  11-digit phone, a contiguous card number, a passport, an account without a BIC;
* never a digit run that is part of a longer one, or a number with a decimal part.

Full names (`names`, `[ФИО#a1f3c9]`) come last, from a named-entity recogniser that runs locally
(masking_names.py, the optional extra [pii-names]); they are not part of `all`.

The tag keeps the kind and the first 4 hex digits of HMAC-SHA256(key, kind + normalized value):
the same value gets the same tag for the life of the process, so the model can still tell two
people apart, and the tag does not reveal the value (the key is random per process).

    masker = Masker(["inn", "phone"])                  # or Masker.from_settings(settings)
    counts = Counter()
    masker.mask_text("ИНН 7762096653, тел. +7 (495) 788-12-34", counts)
    # -> "ИНН [ИНН#5c1e07], тел. [ТЕЛЕФОН#09b24f]" (the hex digits differ per process); counts == {"inn": 1, "phone": 1}
    masker.mask_call_result(result)                     # a new result, with _meta["onec-mcp-proxy/masked"]
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from mcp import types

from .config import NAMES_KIND, PII_KINDS
from .masking_names import NameFinder, may_hold_a_name, names_a_person, normalized_name

if TYPE_CHECKING:
    from .config import Settings

MASKED_META_KEY = "onec-mcp-proxy/masked"
LABELS = {
    "email": "EMAIL",
    "phone": "ТЕЛЕФОН",
    "card": "КАРТА",
    "account": "СЧЁТ",
    "inn": "ИНН",
    "snils": "СНИЛС",
    "passport": "ПАСПОРТ",
    NAMES_KIND: "ФИО",
}
# Every kind, in the order it is applied and reported: names last, so they never see a digit kind's value.
KINDS = (*PII_KINDS, NAMES_KIND)
# 24 bits: among 1,000 distinct values about 0.03 pairs share a tag (16 bits gave about 7).
TAG_HEX_DIGITS = 6
# A context word counts when it ends at most this many characters before the value.
CONTEXT_WINDOW = 40
# Words between the context word and the value ("ИНН покупателя: ") may take at most this many characters.
WORDY_GAP = 24


# --- checksums ------------------------------------------------------------------------------


def _weighted(digits: str, weights: Iterable[int]) -> int:
    return sum(map(operator.mul, map(int, digits), weights))


def inn_valid(value: str) -> bool:
    """The ФНС check digits: one for a 10-digit ИНН (organisation), two for a 12-digit one (person)."""
    if len(value) == 10:
        return _weighted(value, (2, 4, 10, 3, 5, 9, 4, 6, 8)) % 11 % 10 == int(value[9])
    if len(value) == 12:
        first = _weighted(value, (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) % 11 % 10
        second = _weighted(value, (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) % 11 % 10
        return (first, second) == (int(value[10]), int(value[11]))
    return False


def snils_valid(value: str) -> bool:
    """The ПФР check number (the last two digits). Numbers up to 001-001-998 have none, so never match."""
    if len(value) != 11 or int(value[:9]) <= 1001998:
        return False
    total = _weighted(value, range(9, 0, -1)) % 101
    return (0 if total == 100 else total) == int(value[9:])


def luhn_valid(value: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(value)):
        doubled = int(digit) * (2 if position % 2 else 1)
        total += doubled - 9 if doubled > 9 else doubled
    return total % 10 == 0


# (first digits, allowed lengths) of the networks in use in Russia; a Luhn-valid run outside them is no card.
_CARD_NETWORKS: tuple[tuple[range, int, frozenset[int]], ...] = (
    (range(4, 5), 1, frozenset({13, 16, 19})),  # Visa
    (range(51, 56), 2, frozenset({16})),  # Mastercard
    (range(2221, 2721), 4, frozenset({16})),  # Mastercard 2-series
    (range(2200, 2205), 4, frozenset({16, 17, 18, 19})),  # Мир
    (range(34, 35), 2, frozenset({15})),  # American Express
    (range(37, 38), 2, frozenset({15})),
    (range(3528, 3590), 4, frozenset({16, 17, 18, 19})),  # JCB
    (range(62, 63), 2, frozenset({16, 17, 18, 19})),  # UnionPay
    (range(50, 51), 2, frozenset(range(12, 20))),  # Maestro
    (range(56, 70), 2, frozenset(range(12, 20))),
)


def card_valid(value: str) -> bool:
    """Luhn, and a prefix and length some card network issues."""
    network = any(int(value[:size]) in prefixes and len(value) in lengths for prefixes, size, lengths in _CARD_NETWORKS)
    return network and luhn_valid(value)


def account_key_valid(account: str, bic: str) -> bool:
    """The Bank of Russia control key (the 9th digit) of a 20-digit account against a 9-digit BIC.

    An account in a bank is keyed with the BIC's last three digits. A bank's correspondent account
    (30101..., opened at a Bank of Russia branch) is keyed with "0" and the BIC's 5th and 6th digits.
    """
    prefix = "0" + bic[4:6] if account.startswith("301") else bic[-3:]
    weights = (7, 1, 3) * 8
    return sum(int(digit) * weight % 10 for digit, weight in zip(prefix + account, weights, strict=False)) % 10 == 0


# --- context --------------------------------------------------------------------------------


# Labels: the words that name a value written after them. Each alternative is a whole word.
_LABEL_WORDS = {
    "phone": r"тел|телефон[а-яё]*|моб|мобильн[а-яё]*|сотов[а-яё]*|факс|whatsapp|phone|tel|mobile|fax",
    "card": r"карт[а-яё]*|card|visa|mastercard|maestro|мир|pan",
    "account": r"р/сч?|к/сч?|л/сч?|р\.\s?с|к\.\s?с|расч[её]тн[а-яё]*|корр?|корреспондентск[а-яё]*|сч[её]т[а-яё]*"
    r"|сч|account|acc",
    "inn": r"инн|inn|налогоплательщик[а-яё]*",
    "snils": r"снилс|snils|страхов[а-яё]*|пфр|сфр",
    "passport": r"паспорт[а-яё]*|серия|серии|passport|удостоверени[а-яё]*|удостоверяющ[а-яё]*",
    # Names of numbers that are not personal data: after "КБК" 20 digits are no account.
    "other": r"кбк|уин|октмо|окато|окпо|огрн|огрнип|бик|штрих[а-яё]*|ean|артикул[а-яё]*",
}
# Matched against lower-cased text: IGNORECASE makes Cyrillic alternatives several times slower.
_LABEL = re.compile(
    r"(?<![^\W\d_])(?:" + "|".join(f"(?P<{kind}>{words})" for kind, words in _LABEL_WORDS.items()) + r")(?![^\W\d_])"
)
_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")


def _plain_gap(gap: str, kind: str) -> bool:
    """Whether the text between a label and a value still ties them together.

    Words alone ("ИНН покупателя: ") or other values alone ("ИНН: 7707083893, ") do; words and
    numbers together ("ИНН 7707083893, договор ") mean the label named something else, and "№"
    marks a document number (but an account is "Сч. № 40702...").
    """
    if "№" in gap and kind != "account":
        return False
    if _LETTER.search(gap):
        return len(gap) <= WORDY_GAP and not _DIGIT.search(gap)
    return True


_WORD = re.compile(r"[A-ZА-ЯЁ]+(?=[A-ZА-ЯЁ][a-zа-яё])|[A-ZА-ЯЁ]?[a-zа-яё]+|[A-ZА-ЯЁ]+|\d+|/")


def key_words(key: str) -> str:
    """A dict key or a column header as words, so labels are found in it: "ИННКонтрагента" -> "ИНН Контрагента"."""
    return " ".join(_WORD.findall(key))


# Dict keys are a result's schema and come back in every row, so they are worth a cache; table
# headers and cells are not cached, as they may be data.
_dict_key_words = lru_cache(maxsize=1024)(key_words)


def _last_label(text: str) -> tuple[str, str] | None:
    """The kind of the last label in `text` and the text after it, or None."""
    lowered = text.lower()  # the gap is taken from it too: lower() may change the length of exotic text
    last = None
    for last in _LABEL.finditer(lowered):  # noqa: B007 - the last one is the nearest
        pass
    return None if last is None else (str(last.lastgroup), lowered[last.end() :])


def label_of(text: str, start: int, hint: str = "", before: str = "") -> str | None:
    """The kind the nearest label before `text[start:]` names ("other" for КБК, ОГРН, ...), or None.

    Only the nearest label counts, so in "тел.: нет, ИНН 7707083893" the number is an ИНН. `before`
    is the text that preceded `text` (the lines above it). With no label in the window, a dict key
    `hint` names the start of the string (`{"ИНН": "7707083893"}`).
    """
    window = before[-CONTEXT_WINDOW:] + text[:start] if start < CONTEXT_WINDOW else text[start - CONTEXT_WINDOW : start]
    label = _last_label(window[-CONTEXT_WINDOW:])
    if label is None and hint and len(before) + start <= CONTEXT_WINDOW:
        named = _last_label(hint)
        label = None if named is None else (named[0], before + text[:start])
    if label is None or not _plain_gap(label[1], label[0]):
        return None
    return label[0]


# --- detectors ------------------------------------------------------------------------------


class _Bics:
    """The BICs (04 and seven digits) in all the strings of one result, looked for only when an unnamed
    20-digit number needs them: most results have none, and a scan of a large one costs milliseconds."""

    def __init__(self, strings: Callable[[], Iterable[str]] = tuple) -> None:
        self._strings = strings

    @cached_property
    def found(self) -> frozenset[str]:
        return frozenset(bic for text in self._strings() for bic in BIC.findall(text))


_NO_BICS = _Bics()


@dataclass(frozen=True)
class _Scope:
    """What a detector may look at beyond its match: the dict key above the string, the result's BICs."""

    hint: str = ""
    bics: _Bics = _NO_BICS
    before: str = ""  # the text before this line of a longer text, where its label may be


def _label(match: re.Match[str], scope: _Scope) -> str | None:
    return label_of(match.string, match.start(), scope.hint, scope.before)


def _named(kind: str, match: re.Match[str], scope: _Scope) -> bool:
    return _label(match, scope) == kind


_RUN = re.compile(r"\d+")
_NOT_DIGIT = re.compile(r"\D")


def _groups(text: str) -> tuple[int, ...]:
    """Lengths of the digit runs: "+7 (495) 123-45-67" -> (1, 3, 3, 2, 2)."""
    return tuple(map(len, _RUN.findall(text)))


def _digits(text: str) -> str:
    return _NOT_DIGIT.sub("", text)


# Never inside a longer digit run, a grouped number ("1 234 ...") or a number with a decimal part,
# nor glued to letters (an article like "АРТ7707083893").
_START = r"(?<!\w)(?<!\d[ \-])(?<!\d[.,])"
_END = r"(?![ \-]?\d)(?![.,]\d)(?![^\W\d_])"
_SPACE = " \u00a0"  # 1C writes a no-break space in formatted numbers

EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}(?![\w-])")
PHONE = re.compile(
    rf"(?<![\w+])(?<!\d[ \-])(?:(?P<prefix>\+ ?7|8|7)[{_SPACE}\-]{{0,2}})?"
    rf"(?P<body>\(?\d(?:[{_SPACE}\-()]{{0,2}}\d){{9}}){_END}"
)
CARD = re.compile(rf"{_START}\d(?:[ \-]?\d){{12,18}}{_END}")
ACCOUNT = re.compile(rf"{_START}\d(?:[ \-]?\d){{19}}{_END}")
INN = re.compile(r"(?<!\w)(?<!\w-)(?<!\d[.,])(?:\d{12}|\d{10})(?!\w)(?![.,]\d)")
SNILS = re.compile(rf"{_START}\d{{3}}(?P<sep>[ \-]?)\d{{3}}(?P=sep)\d{{3}}[ \-]?\d{{2}}{_END}")
PASSPORT = re.compile(
    rf"{_START}(?P<series>\d{{2}} ?\d{{2}})(?: ?|[ ,]*(?:№|номер)[ :]*)(?P<number>\d{{6}}){_END}", re.IGNORECASE
)
BIC = re.compile(r"(?<!\d)04\d{7}(?!\d)")
_INN_KPP_PAIR = re.compile(r" ?/ ?\d{9}(?!\d)")  # "7707083893/770701001": the ИНН/КПП of printed forms
_SNILS_FORM = re.compile(r"\d{3}-\d{3}-\d{3}[ \-]\d{2}")  # the way 1C and every form write it

# Digit groups after +7/8 in the usual ways of writing a Russian number: 916 123-45-67, 800 555 35 35,
# and with a 4- or 5-digit area code only in parentheses, (3452) 12-34-56: "8 4512 345678" may be two numbers.
_PHONE_GROUPS = frozenset({(10,), (3, 3, 2, 2), (3, 3, 4), (3, 7)})
_PHONE_PAREN_GROUPS = _PHONE_GROUPS | {(4, 2, 2, 2), (4, 3, 3), (4, 6), (5, 1, 2, 2), (5, 5)}
_PHONE_PAREN = re.compile(rf"\(\d{{3,5}}\)[{_SPACE}\-]?\d[\d{_SPACE}\-]*")
_RUSSIAN_CODES = "3489"  # Russian area and mobile codes start with 3, 4, 8 or 9
_KAZAKH_CODE = "7"  # Kazakhstan shares +7: its numbers count when written with the country code
_CARD_GROUPS = frozenset({(4, 6, 5), (4, 6, 4)})  # American Express, Diners
_ACCOUNT_GROUPS = frozenset({(20,), (5, 3, 1, 11), (5, 3, 1, 4, 7), (4, 4, 4, 4, 4)})


def _phone(match: re.Match[str], scope: _Scope) -> str | None:
    prefix, body = (match["prefix"] or "").replace(" ", ""), match["body"]
    codes = _RUSSIAN_CODES + _KAZAKH_CODE if prefix else _RUSSIAN_CODES
    if body.lstrip("(")[0] not in codes:  # first, as it rejects most 10-digit numbers at once
        return None
    groups = _groups(body)
    paren = "(" in body or ")" in body
    if paren and not _PHONE_PAREN.fullmatch(body):
        return None
    if groups not in (_PHONE_PAREN_GROUPS if paren else _PHONE_GROUPS):
        return None
    if not prefix:  # (495) 123-45-67: only the full city format, the area code in parentheses
        written = paren and len(groups) == 4
    elif prefix == "7":  # a count or a year may stand before a number: "7" needs parentheses
        written = paren
    else:  # "+7" says it is a phone; after "8" the digits must be grouped, else it is any 11-digit run
        written = prefix == "+7" or len(groups) > 1
    return "7" + _digits(body) if written or _named("phone", match, scope) else None


def _card(match: re.Match[str], scope: _Scope) -> str | None:
    text = match[0]
    digits = _digits(text)
    if not card_valid(digits):
        return None
    groups = _groups(text)
    if len(groups) == 1:  # contiguous: an order number passes Luhn 1 time in 10, so it must be named
        return digits if _named("card", match, scope) else None
    fours = all(size == 4 for size in groups[:-1]) and 1 <= groups[-1] <= 4
    one_separator = len(set(_RUN.sub("", text))) == 1
    return digits if one_separator and (fours or groups in _CARD_GROUPS) else None


def _account(match: re.Match[str], scope: _Scope) -> str | None:
    if _groups(match[0]) not in _ACCOUNT_GROUPS:
        return None
    digits = _digits(match[0])
    label = _label(match, scope)
    if label == "account":
        return digits
    if label == "other":  # КБК, УИН, ...: 20 digits that are no account, whatever their key
        return None
    # Unnamed: the control key against a BIC of the same result passes 1 time in 10 by chance.
    return digits if any(account_key_valid(digits, bic) for bic in scope.bics.found) else None


def _inn(match: re.Match[str], scope: _Scope) -> str | None:
    digits = match[0]
    if digits.startswith("00") or not inn_valid(digits):
        return None
    if len(digits) == 12:  # two check digits: 1 random run in 100 passes
        return digits
    # One check digit: 1 random 10-digit number in 10 passes, so the text must say it is an ИНН.
    if _INN_KPP_PAIR.match(match.string, match.end()) or _named("inn", match, scope):
        return digits
    return None


def _snils(match: re.Match[str], scope: _Scope) -> str | None:
    digits = _digits(match[0])
    if not snils_valid(digits):
        return None
    return digits if _SNILS_FORM.fullmatch(match[0]) or _named("snils", match, scope) else None


def _passport(match: re.Match[str], scope: _Scope) -> str | None:
    series = _digits(match["series"])
    year = int(series[2:])  # the series ends with the year the blank was printed: 1997 on
    if series.startswith("00") or not (year >= 97 or year <= 30):
        return None
    return series + match["number"] if _named("passport", match, scope) else None


def _email(match: re.Match[str], scope: _Scope) -> str | None:
    return match[0].lower()


Accept = Callable[[re.Match[str], _Scope], "str | None"]
DETECTORS: dict[str, tuple[re.Pattern[str], Accept]] = {
    "email": (EMAIL, _email),
    "phone": (PHONE, _phone),
    "card": (CARD, _card),
    "account": (ACCOUNT, _account),
    "inn": (INN, _inn),
    "snils": (SNILS, _snils),
    "passport": (PASSPORT, _passport),
}
_CELL = re.compile(r"(\||\t)")
_RULE = re.compile(r"[\s|:\-+=]*")  # a Markdown or ASCII table's rule line: |---|:--:|
# Where an identifier may be: ten digits or more with separators between (sums, dates and document
# numbers have fewer), a number after "№" or "номер" (a passport), an "@". Checking this first,
# with fast regexes and `in`, saves the seven detectors on most lines of a report.
_CLUSTER = re.compile(r"\d[\d \u00a0\-()]{8,}\d")
_NUMBERED = re.compile(r"(?:№|[Нн]омер)[ :]*\d{6}")


# The fewest digits each kind has: a line whose longest run has 11 digits needs no card or account detector.
_MIN_DIGITS = {"phone": 10, "card": 13, "account": 20, "inn": 10, "snils": 11, "passport": 10}


def _candidate(text: str) -> bool:
    return (
        "@" in text
        or _CLUSTER.search(text) is not None
        or (("№" in text or "омер" in text) and _NUMBERED.search(text) is not None)
    )


def _possible_kinds(text: str) -> set[str]:
    """The kinds `text` may hold, judging by its "@" and the most digits in one run of them."""
    most = max((len(_digits(run)) for run in _CLUSTER.findall(text)), default=0)
    kinds = {kind for kind, least in _MIN_DIGITS.items() if most >= least}
    if "@" in text:
        kinds.add("email")
    if ("№" in text or "омер" in text) and _NUMBERED.search(text):
        kinds.add("passport")
    return kinds


# --- the masker -----------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _with_counts(meta: dict[str, Any] | None, counts: Counter[str]) -> dict[str, Any]:
    ordered = {kind: counts[kind] for kind in KINDS if counts[kind]}
    return {**(meta or {}), MASKED_META_KEY: ordered}


class Masker:
    """Masks the enabled kinds of personal data in text, values and whole MCP results."""

    def __init__(self, kinds: Iterable[str], *, key: bytes | None = None) -> None:
        """Raises ConfigError when `names` is asked for but the optional extra is not installed."""
        wanted = set(kinds)
        unknown = wanted - {*KINDS, "all"}
        if unknown:
            raise ValueError(f"unknown personal-data kind {', '.join(sorted(unknown))}; use {', '.join(KINDS)}")
        # `all` is every kind but names, which needs the optional extra and costs far more: see config.NAMES_KIND.
        self.kinds = tuple(kind for kind in KINDS if kind in wanted or ("all" in wanted and kind in PII_KINDS))
        # Per process by default: tags stay stable for a session but mean nothing to anyone else.
        self._hmac = hmac.new(key if key is not None else secrets.token_bytes(32), digestmod=hashlib.sha256)
        self._detectors = [(kind, *DETECTORS[kind]) for kind in self.kinds if kind in DETECTORS]
        self._names = NameFinder() if NAMES_KIND in self.kinds else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Masker:
        return cls(settings.mask_pii)

    @property
    def recognises_names(self) -> bool:
        """Whether the (slow, CPU-bound) full-name recogniser runs on every result."""
        return self._names is not None

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def tag(self, kind: str, normalized: str) -> str:
        keyed = self._hmac.copy()  # copying the keyed state is cheaper than keying again
        keyed.update((kind + normalized).encode())
        return f"[{LABELS[kind]}#{keyed.hexdigest()[:TAG_HEX_DIGITS]}]"

    # --- text and values --------------------------------------------------------------------

    def mask_text(self, text: str, counts: Counter[str]) -> str:
        """`text` with every identifier of an enabled kind replaced by its tag; `counts` gets one per tag."""
        return self._mask(text, counts, _Scope(bics=_Bics(lambda: [text]))) if self.kinds else text

    def mask_value(self, value: Any, counts: Counter[str], *, key_hint: str = "") -> Any:
        """Strings inside dicts and lists masked; each dict key is the context of its value."""
        if not self.kinds:
            return value
        self._prepare_names(value)
        return self._walk(value, counts, _Scope(key_words(key_hint), _Bics(lambda: _strings(value))))

    def mask_arguments(self, arguments: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
        """Tool arguments as the audit log may keep them, and how many of each kind were masked."""
        counts: Counter[str] = Counter()
        masked = self.mask_value(arguments, counts)
        return masked, {kind: counts[kind] for kind in KINDS if counts[kind]}

    def _mask(self, text: str, counts: Counter[str], scope: _Scope) -> str:
        if self._detectors and _candidate(text):
            if "\n" not in text and "|" not in text and "\t" not in text:
                text = self._mask_line(text, counts, scope)
            else:
                text = self._mask_lines(text, counts, scope)
        return text if self._names is None else self._mask_names(self._names, text, counts, scope.hint)

    def _mask_line(self, text: str, counts: Counter[str], scope: _Scope) -> str:
        """Every enabled kind, in PII_KINDS order. No identifier spans lines, so a line is a unit."""
        possible = _possible_kinds(text)
        for kind, pattern, accept in self._detectors:
            if kind in possible:
                text = pattern.sub(self._replacer(kind, accept, counts, scope), text)
        return text

    def _mask_lines(self, text: str, counts: Counter[str], scope: _Scope) -> str:
        """A longer text line by line: only lines that may hold an identifier are looked at.

        Table rows ("a | b", Markdown, tab-separated) are masked cell by cell: the label of a cell's
        value is usually in the column's header ("ИНН", "Паспорт") or, in a two-column table of
        details, in the cell on its left. A row that holds no identifier is the header of the rows
        below it.
        """
        header: list[str] = []
        lines: list[str] = []
        position = 0
        for line in text.splitlines(keepends=True):
            cells = _CELL.split(line)
            if len(cells) < 3:  # not a row: a table, if any, has ended
                header = []
            start, position = position, position + len(line)
            if _candidate(line):
                # A label may sit at the end of the line above; the dict key only names the string's start.
                before = text[max(0, start - CONTEXT_WINDOW) : start]
                above = _Scope(scope.hint if start <= CONTEXT_WINDOW else "", scope.bics, before)
                row = len(cells) >= 3
                line = self._mask_row(cells, header, counts, above) if row else self._mask_line(line, counts, above)
            elif len(cells) >= 3 and not _RULE.fullmatch(line):
                header = [key_words(cell.strip()) for cell in cells[0::2]]
            lines.append(line)
        return "".join(lines)

    def _mask_row(self, parts: list[str], header: list[str], counts: Counter[str], scope: _Scope) -> str:
        cells = parts[0::2]
        for index, cell in enumerate(cells):
            if _candidate(cell):
                column = header[index] if len(header) == len(cells) else ""
                left = cells[index - 1] if index and not _DIGIT.search(cells[index - 1]) else ""
                hint = " ".join(words for words in (scope.hint, column, left) if words)  # the nearest label last
                parts[2 * index] = self._mask_line(cell, counts, _Scope(hint, scope.bics))
        return "".join(parts)

    def _prepare_names(self, value: Any) -> None:
        """The strings of a structured value to the recogniser in one batch, before the walk asks about each.

        Only those without digits: the other kinds leave them as they are, so the names pass sees them so.
        """
        if self._names is not None:
            self._names.prepare(text for text in _strings(value) if not _DIGIT.search(text))

    def _mask_names(self, finder: NameFinder, text: str, counts: Counter[str], hint: str) -> str:
        """Full names, after every other kind: line by line, a table row cell by cell, all in one batch.

        The recogniser misses a name in a Markdown row that it finds in the cell alone. The first row
        of a table names the columns below it; the dict key `hint` names a one-line value only.
        """
        if not may_hold_a_name(text):
            return text
        if "\n" not in text and "|" not in text and "\t" not in text:
            return self._tag_names(text, finder.spans(text, person=names_a_person(hint)), counts)
        pieces: list[str] = []
        segments: list[tuple[int, bool]] = []  # a piece to look in, and whether its column names a person
        header: list[str] = []
        for line in text.splitlines(keepends=True):
            cells = _CELL.split(line)
            if len(cells) < 3:  # not a row: a table, if any, has ended
                header = []
                segments.append((len(pieces), False))
                pieces.append(line)
            elif _RULE.fullmatch(line):
                pieces.append(line)
            else:
                header = header or [key_words(cell.strip()) for cell in cells[0::2]]
                columns = header if len(header) == len(cells[0::2]) else [""] * len(cells[0::2])
                segments += [(len(pieces) + 2 * index, names_a_person(column)) for index, column in enumerate(columns)]
                pieces += cells
        found = finder.spans_of([(pieces[index], person) for index, person in segments])
        for (index, _), spans in zip(segments, found, strict=True):
            pieces[index] = self._tag_names(pieces[index], spans, counts)
        return "".join(pieces)

    def _tag_names(self, text: str, spans: list[tuple[int, int]], counts: Counter[str]) -> str:
        for start, stop in reversed(spans):  # from the end, so the earlier offsets still hold
            text = text[:start] + self.tag(NAMES_KIND, normalized_name(text[start:stop])) + text[stop:]
            counts[NAMES_KIND] += 1  # per name: a zero count would make an empty Counter true
        return text

    def _replacer(
        self, kind: str, accept: Accept, counts: Counter[str], scope: _Scope
    ) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            normalized = accept(match, scope)
            if normalized is None:
                return match[0]
            counts[kind] += 1
            return self.tag(kind, normalized)

        return replace

    def _walk(self, value: Any, counts: Counter[str], scope: _Scope) -> Any:
        if isinstance(value, str):
            return self._mask(value, counts, scope)
        if isinstance(value, dict):
            # Keys are text the client receives too ({"ivanov@mail.ru": 3}); a key's own words label its value.
            return {
                (self._mask(key, counts, scope) if isinstance(key, str) else key): self._walk(
                    item, counts, _Scope(_dict_key_words(key) if isinstance(key, str) else "", scope.bics)
                )
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self._walk(item, counts, scope) for item in value)
        return value  # numbers, booleans, None: a schema may require their type, so they stay

    # --- MCP results ------------------------------------------------------------------------

    def _mask_content(self, item: Any, counts: Counter[str], scope: _Scope) -> Any:
        """A content item with its text masked; images, audio, links and blobs as they are."""
        if isinstance(item, types.TextContent):
            text = self._mask(item.text, counts, scope)
            return item if text == item.text else item.model_copy(update={"text": text})
        if isinstance(item, types.EmbeddedResource) and isinstance(item.resource, types.TextResourceContents):
            resource = self._mask_resource(item.resource, counts, scope)
            return item if resource is item.resource else item.model_copy(update={"resource": resource})
        if isinstance(item, types.ResourceLink):
            # Its words are shown to the model; its URI is left whole, or the link would lead nowhere.
            texts = {field: getattr(item, field) for field in ("name", "title", "description")}
            masked = {field: self._mask(text, counts, scope) for field, text in texts.items() if isinstance(text, str)}
            changed = {field: text for field, text in masked.items() if text != texts[field]}
            return item.model_copy(update=changed) if changed else item
        return item

    def _mask_resource(self, contents: Any, counts: Counter[str], scope: _Scope) -> Any:
        if not isinstance(contents, types.TextResourceContents):
            return contents
        text = self._mask(contents.text, counts, scope)
        return contents if text == contents.text else contents.model_copy(update={"text": text})

    def mask_call_result(self, result: types.CallToolResult) -> types.CallToolResult:
        """A new result with its texts and structured content masked, or `result` itself when nothing was."""
        if not self.kinds:
            return result
        bics = _Bics(lambda: [*_content_texts(result.content), *_strings(result.structured_content)])
        scope = _Scope(bics=bics)
        counts: Counter[str] = Counter()
        content = [self._mask_content(item, counts, scope) for item in result.content]
        self._prepare_names(result.structured_content)
        structured = self._walk(result.structured_content, counts, scope)
        if not counts:
            return result
        update = {"content": content, "structured_content": structured, "meta": _with_counts(result.meta, counts)}
        return result.model_copy(update=update)

    def mask_read_result(self, result: types.ReadResourceResult) -> types.ReadResourceResult:
        if not self.kinds:
            return result
        texts = [item.text for item in result.contents if isinstance(item, types.TextResourceContents)]
        scope = _Scope(bics=_Bics(lambda: texts))
        counts: Counter[str] = Counter()
        contents = [self._mask_resource(item, counts, scope) for item in result.contents]
        if not counts:
            return result
        return result.model_copy(update={"contents": contents, "meta": _with_counts(result.meta, counts)})

    def mask_prompt_result(self, result: types.GetPromptResult) -> types.GetPromptResult:
        if not self.kinds:
            return result
        scope = _Scope(bics=_Bics(lambda: _content_texts(message.content for message in result.messages)))
        counts: Counter[str] = Counter()
        messages = [
            message.model_copy(update={"content": self._mask_content(message.content, counts, scope)})
            for message in result.messages
        ]
        description = self._mask(result.description, counts, scope) if result.description else result.description
        if not counts:
            return result
        update = {"messages": messages, "description": description, "meta": _with_counts(result.meta, counts)}
        return result.model_copy(update=update)


def _content_texts(items: Iterable[Any]) -> Iterator[str]:
    for item in items:
        if isinstance(item, types.TextContent):
            yield item.text
        elif isinstance(item, types.EmbeddedResource) and isinstance(item.resource, types.TextResourceContents):
            yield item.resource.text


def masked_counts(result: Any) -> dict[str, int]:
    """What `Masker` masked in `result`, per kind, as it put it in `_meta` (empty when nothing was).

    Only kinds with a count are kept: the audit log writes what this returns.
    """
    meta = getattr(result, "meta", None)
    counts = meta.get(MASKED_META_KEY) if isinstance(meta, dict) else None
    if not isinstance(counts, dict):
        return {}
    return {
        str(kind): count
        for kind, count in counts.items()
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0
    }
