"""The Finnish personal identity code (henkilötunnus, HETU) on the Python side.

Validation delegates to python-stdnum (``stdnum.fi.hetu``); this module adds
what the pipeline needs around it: a reason for each rejection (the same reason
names the Spark expressions in :mod:`pseudonymise.validate` give), and the
control-character computation used by the synthetic data generator.

The normalised form is the full 11-character upper-case code *including* the
century sign: ``100190-999P`` and ``100190Y999P`` belong to different persons.
"""

from __future__ import annotations

import re
from datetime import date

from stdnum import exceptions as stdnum_exc
from stdnum.fi import hetu as stdnum_hetu

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
FORMAT = re.compile(r"^(\d{2})(\d{2})(\d{2})([-+A-FU-Y])(\d{3})([0-9A-Y])$")

# Rejection reasons, in the order they are checked.
HETU_MISSING = "hetu_missing"
HETU_FORMAT = "hetu_format"
HETU_DATE = "hetu_date"
HETU_INDIVIDUAL = "hetu_individual_number"
HETU_CHECKSUM = "hetu_checksum"
HETU_TEMPORARY = "hetu_temporary"


def normalise(code: str) -> str:
    """Strip surrounding space and upper-case; the century sign is kept."""
    return code.strip().upper()


def control_character(ddmmyy: str, individual: str) -> str:
    """The control character for a date part ``DDMMYY`` and individual number ``NNN``."""
    return CHECK_ALPHABET[int(ddmmyy + individual) % 31]


def rejection_reason(code: str | None, *, allow_temporary: bool = False) -> str | None:
    """Why ``code`` is not a usable identity code, or ``None`` if it is.

    Agrees with ``stdnum.fi.hetu.is_valid`` (tested) and names the first failing rule.
    """
    if code is None or code.strip() == "":
        return HETU_MISSING
    c = normalise(code)
    m = FORMAT.match(c)
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


def is_valid(code: str, *, allow_temporary: bool = False) -> bool:
    """True if stdnum accepts ``code`` (temporary codes only with ``allow_temporary``)."""
    try:
        stdnum_hetu.validate(code, allow_temporary=allow_temporary)
    except stdnum_exc.ValidationError:
        return False
    return True


def birth_date(code: str) -> date:
    """Birth date encoded in a valid identity code."""
    m = FORMAT.match(normalise(code))
    if not m:
        raise ValueError(f"not an identity code: {code!r}")
    dd, mm, yy, sign, _, _ = m.groups()
    return date(CENTURY_SIGNS[sign] + int(yy), int(mm), int(dd))


def sex(code: str) -> int:
    """1 (male, odd individual number) or 2 (female, even)."""
    m = FORMAT.match(normalise(code))
    if not m:
        raise ValueError(f"not an identity code: {code!r}")
    return 1 if int(m.group(5)) % 2 else 2
