"""The Finnish personal identity code (henkilötunnus, HETU) on the Python side.

The rules are the pipeline's (:mod:`pseudonymise.validate` and its Java function give the same reason for
every input, tested): a reason for each rejection, and the control-character computation used by the
synthetic data generator.  On plain ASCII input they agree with python-stdnum (``stdnum.fi.hetu``, tested);
stdnum also maps look-alike characters first (a Unicode minus, full-width digits, a no-break space) and
accepts the code, where a registry extract with such a code has a fault and the service quarantines the row
as ``hetu_format``: only ASCII digits, the century signs and spaces around the code are accepted.

The normalised form is the full 11-character upper-case code *including* the
century sign: ``100190-999P`` and ``100190Y999P`` belong to different persons.
"""

from __future__ import annotations

import re
from datetime import date

CHECK_ALPHABET = "0123456789ABCDEFHJKLMNPRSTUVWXY"
#: The identifier system of the personal identity code in FHIR (HL7 Finland base profiles).
FHIR_SYSTEM = "urn:oid:1.2.246.21"
CENTURY_SIGNS: dict[str, int] = {
    "+": 1800,
    "-": 1900, "Y": 1900, "X": 1900, "W": 1900, "V": 1900, "U": 1900,
    "A": 2000, "B": 2000, "C": 2000, "D": 2000, "E": 2000, "F": 2000,
}
SIGNS_BY_CENTURY: dict[int, str] = {
    1800: "+",
    1900: "-YXWVU",
    2000: "ABCDEF",
}
FORMAT = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{2})([-+A-FU-Y])([0-9]{3})([0-9A-Y])")  # used with fullmatch

# Rejection reasons, in the order they are checked.
HETU_MISSING = "hetu_missing"
HETU_FORMAT = "hetu_format"
HETU_DATE = "hetu_date"
HETU_INDIVIDUAL = "hetu_individual_number"
HETU_CHECKSUM = "hetu_checksum"
HETU_TEMPORARY = "hetu_temporary"


def normalise(code: str) -> str:
    """Strip surrounding spaces (U+0020 only, as Spark's ``trim``) and upper-case; the century sign is kept.

    A tab, a line break or a no-break space around a code is left in place, so the code fails its format.
    """
    return code.strip(" ").upper()


def control_character(ddmmyy: str, individual: str) -> str:
    """The control character for a date part ``DDMMYY`` and individual number ``NNN``."""
    return CHECK_ALPHABET[int(ddmmyy + individual) % 31]


def rejection_reason(code: str | None, *, allow_temporary: bool = False) -> str | None:
    """Why ``code`` is not a usable identity code, or ``None`` if it is.

    Names the first failing rule; agrees with ``stdnum.fi.hetu.is_valid`` on ASCII input (tested).
    """
    c = normalise(code) if code is not None else ""
    if c == "":
        return HETU_MISSING
    m = FORMAT.fullmatch(c)
    if not m:
        return HETU_FORMAT
    dd, mm, yy, sign, nnn, check = m.groups()
    try:
        date(CENTURY_SIGNS[sign] + int(yy), int(mm), int(dd))
    except ValueError:
        return HETU_DATE
    if int(nnn) < 2:
        return HETU_INDIVIDUAL
    if control_character(dd + mm + yy, nnn) != check:
        return HETU_CHECKSUM
    if int(nnn) >= 900 and not allow_temporary:
        return HETU_TEMPORARY
    return None


def is_valid(code: str | None, *, allow_temporary: bool = False) -> bool:
    """True if ``code`` is a usable identity code (temporary codes only with ``allow_temporary``)."""
    return rejection_reason(code, allow_temporary=allow_temporary) is None


def _parts(code: str) -> tuple[str, ...]:
    """The six parts of an identity code of the right shape (:data:`FORMAT`), or ValueError."""
    m = FORMAT.fullmatch(normalise(code))
    if not m:
        raise ValueError(f"not an identity code: {code!r}")
    return m.groups()


def birth_date(code: str) -> date:
    """Birth date encoded in a valid identity code."""
    dd, mm, yy, sign, _, _ = _parts(code)
    return date(CENTURY_SIGNS[sign] + int(yy), int(mm), int(dd))


def sex(code: str) -> int:
    """1 (male, odd individual number) or 2 (female, even)."""
    return 1 if int(_parts(code)[4]) % 2 else 2
