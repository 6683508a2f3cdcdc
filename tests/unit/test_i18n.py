"""Finnish, Swedish and English for every page, document and message: the catalogues are complete and current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

from permits.application import Kind, Purpose
from permits.lifecycle import Event, State
from permits.permissions import ACTIONS
from secure_env.airlock.lifecycle import RequestState
from toisio import i18n
from toisio.app.portal.labels import ACTION_LABELS, LABELS
from toisio.identity import Role

ROOT = Path(__file__).resolve().parents[2]


def _extract(tmp_path: Path) -> set[str]:
    pot = tmp_path / "messages.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg", "-k", "N_",
                    "-k", "_", "--no-location", "-o", str(pot), "."], cwd=ROOT, check=True, capture_output=True)
    with pot.open("rb") as fh:
        return {m.id for m in read_po(fh) if m.id}


def test_every_string_of_the_code_and_templates_is_translated_to_finnish_and_swedish(tmp_path):
    wanted = _extract(tmp_path)
    assert len(wanted) > 300
    for lang in ("fi", "sv"):
        with i18n.catalogue_path(lang).open("rb") as fh:
            cat = read_po(fh, locale=lang)
        have = {m.id: m.string for m in cat if m.id}
        missing = sorted(wanted - {k for k, v in have.items() if v})
        assert not missing, f"{lang}: {len(missing)} strings without a translation (run make i18n): {missing[:10]}"
        assert not any(m.fuzzy for m in cat if m.id), f"{lang}: fuzzy translations"


def test_every_code_the_portal_shows_has_a_plain_word():
    codes = {s.value for s in State} | {e.value for e in Event} | {p.value for p in Purpose} | {k.value for k in Kind}
    codes |= {r.value for r in Role} | {s.value for s in RequestState}
    assert codes <= set(LABELS), sorted(codes - set(LABELS))
    assert {a for a, x in ACTIONS.items() if x.event is not None} <= set(ACTION_LABELS)


def test_languages_are_chosen_from_the_browser_or_default_to_finnish():
    assert i18n.from_accept_language("sv-FI,sv;q=0.9,en;q=0.8") == "sv"
    assert i18n.from_accept_language("de-DE, en;q=0.5") == "en"
    assert i18n.from_accept_language("en;q=0.2, fi;q=0.9") == "fi"
    assert i18n.from_accept_language("xx") == "fi" and i18n.from_accept_language(None) == "fi"
    assert i18n.normalise("SV_fi") == "sv" and i18n.normalise("de") == "en"
    assert i18n.gettext_for("sv")("Sign in") == "Logga in" and i18n.gettext_for("fi")("Sign in") == "Kirjaudu sisään"
    assert i18n.gettext_for("en")("Sign in") == "Sign in"
