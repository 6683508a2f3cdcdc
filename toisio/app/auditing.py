"""Audit verification across the stages: the chain, then every case, user and token against it.

One function for the command line (``toisio audit verify``), the API and the portal's auditor page.
"""

from __future__ import annotations

from dataclasses import dataclass

from toisio.audit_access import verify_chain
from toisio.identity import Actor
from toisio.service import Service


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str
    changed_behind_the_log: tuple[tuple[str, str], ...]
    #: the chain does not hold its anchored head (:attr:`toisio.audit.VerifyResult.anchor_missing`)
    anchor_missing: bool = False

    @property
    def summary(self) -> str:
        if self.first_bad_seq is not None or (not self.ok and not self.changed_behind_the_log):
            return (f"audit log broken at entry {self.first_bad_seq}: {self.reason} "
                    f"({self.checked} entries verified before it)")
        if self.changed_behind_the_log:
            return ("the audit log is intact but these were changed behind it: "
                    + "; ".join(f"{what}: {why}" for what, why in self.changed_behind_the_log))
        return f"audit log intact: {self.checked} entries verified, and every case, user and token matches it"


def verify_all(svc: Service, actor: Actor, *, anchor: tuple[int, str] | None = None) -> Verification:
    from permits.service import verify_cases
    from toisio.identity import verify_identities

    result = verify_chain(svc, actor, anchor=anchor)
    if not result.ok:
        return Verification(False, result.checked, result.first_bad_seq, result.reason, (),
                            anchor_missing=result.anchor_missing)
    bad = tuple(verify_cases(svc) + verify_identities(svc))
    return Verification(not bad, result.checked, None, "", bad)
