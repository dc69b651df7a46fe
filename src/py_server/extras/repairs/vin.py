"""VIN normalisation and validation (ISO 3779, ГОСТ Р 51980-2002).

    normalize_vin(" xweg-3417 bn0009095 ")   # -> "XWEG3417BN0009095"
    validate_vin("XWEG3417BN000909")          # raises InvalidVinError (length 16)

Users type VINs by hand, often on a Russian keyboard, so we fold case, drop separators and map
Cyrillic look-alikes to Latin before validating. The position-9 check digit is mandatory only in
North America and real Russian VINs (e.g. XWEG3417BN0009095) fail it, so it is never checked.
"""

from __future__ import annotations

import re

VIN_LENGTH = 17
VIN_ALPHABET = frozenset("ABCDEFGHJKLMNPRSTUVWXYZ0123456789")  # no I, O, Q
VIN_FORMAT_HINT = "VIN — 17 символов: цифры и латинские буквы, кроме I, O и Q (например, XWEG3417BN0009095)"

# Upper-case Cyrillic letters that look like Latin ones; lower case is folded by str.upper() first.
_CYRILLIC_TO_LATIN = str.maketrans("АВЕКМНОРСТУХ", "ABEKMHOPCTYX")
# Whitespace of any kind (incl. NBSP from copy-paste) and the dashes people put between groups.
_SEPARATORS = re.compile(r"[\s\-‐‑‒–—−]+")
_ECHO_LIMIT = 40  # keep a pasted essay out of the error text


class InvalidVinError(ValueError):
    """The VIN cannot be valid. `str(exc)` is a Russian message naming what is wrong."""


def normalize_vin(raw: str) -> str:
    """Strip separators, fold case and map Cyrillic look-alikes to Latin. Does not validate."""
    return _SEPARATORS.sub("", raw).upper().translate(_CYRILLIC_TO_LATIN)


def validate_vin(raw: object) -> str:
    """Return the normalised VIN.

    Raises:
        InvalidVinError: not a string, empty, wrong length or characters outside the VIN alphabet.
    """
    if not isinstance(raw, str):
        raise InvalidVinError(f"VIN должен быть строкой, получено: {type(raw).__name__}. {VIN_FORMAT_HINT}.")
    vin = normalize_vin(raw)
    if not vin:
        raise InvalidVinError(f"VIN не указан. {VIN_FORMAT_HINT}.")
    problems: list[str] = []
    bad = _bad_characters(vin)
    if bad:
        problems.append("недопустимые символы: " + ", ".join(bad))
    if len(vin) != VIN_LENGTH:
        problems.append(f"длина {len(vin)} вместо {VIN_LENGTH}")
    if problems:
        shown = vin if len(vin) <= _ECHO_LIMIT else vin[:_ECHO_LIMIT] + "…"
        raise InvalidVinError(f"Некорректный VIN «{shown}»: {'; '.join(problems)}. {VIN_FORMAT_HINT}.")
    return vin


def _bad_characters(vin: str) -> list[str]:
    seen: dict[str, None] = {}  # ordered set: report characters in the order the user typed them
    for char in vin:
        if char not in VIN_ALPHABET:
            seen.setdefault(char if char.isprintable() else repr(char), None)
    return list(seen)
