"""Finnish, Swedish and English: one Babel message catalogue for every page, document and message.

English is the source language.  The catalogues are ``toisio/locale/<lang>/LC_MESSAGES/messages.po``;
they are compiled in memory when first used (no build step, no binary files in git).  ``make i18n``
extracts new strings from the templates and the Python code and merges them into the catalogues;
``tests/unit/test_i18n.py`` fails when a string has no Finnish or Swedish translation.
"""

from __future__ import annotations

import gettext
import io
from functools import cache
from importlib import resources

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LANGUAGES: dict[str, str] = {"fi": "Suomi", "sv": "Svenska", "en": "English"}
DEFAULT = "fi"


def normalise(lang: str | None) -> str:
    """A supported language code from what a user or browser sent (``sv-FI`` -> ``sv``); English otherwise."""
    code = (lang or "").strip().lower().replace("_", "-").split("-")[0]
    return code if code in LANGUAGES else "en"


def from_accept_language(header: str | None) -> str:
    """The first supported language of an ``Accept-Language`` header, or Finnish."""
    if not header:
        return DEFAULT
    ranked = []
    for i, part in enumerate(header.split(",")):
        lang, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        ranked.append((-weight, i, lang))
    for _w, _i, lang in sorted(ranked):
        code = lang.strip().lower().split("-")[0]
        if code in LANGUAGES:
            return code
    return DEFAULT


def catalogue_path(lang: str):
    return resources.files("toisio").joinpath("locale", lang, "LC_MESSAGES", "messages.po")


@cache
def translations(lang: str) -> gettext.NullTranslations:
    """The compiled translations of ``lang`` (English: the identity)."""
    lang = normalise(lang)
    if lang == "en":
        return gettext.NullTranslations()
    with catalogue_path(lang).open("rb") as fh:
        catalog = read_po(fh, locale=lang)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return gettext.GNUTranslations(buf)


def gettext_for(lang: str):
    """``_`` for ``lang``."""
    return translations(lang).gettext


def ngettext_for(lang: str):
    return translations(lang).ngettext
