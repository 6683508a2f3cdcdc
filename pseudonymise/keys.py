"""Per-permit pseudonymisation keys, derived from the master key with HKDF-SHA256.

The key for a permit is ``HKDF(master, salt="toisio-pseudonym", info="<permit id>:v<version>")``,
so pseudonyms differ between permits and cannot be linked across them, while the
same permit and key version always give the same pseudonyms (the key is retained,
so an extraction can be reproduced; the data is not).  Only the key *id* is ever
recorded: ``<permit id>/v<version>/<fingerprint>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from toisio.keystore import Secret

SALT = b"toisio-pseudonym"


@dataclass(frozen=True)
class PermitKey:
    """The derived key of one permit and key version."""

    permit_id: str
    version: int
    secret: Secret = field(repr=False)

    @property
    def key_id(self) -> str:
        """Non-secret identifier recorded in manifests, runs and the audit log."""
        return f"{self.permit_id}/v{self.version}/{self.secret.fingerprint}"

    def __repr__(self) -> str:
        return f"PermitKey({self.key_id})"


def derive_permit_key(master: Secret, permit_id: str, version: int = 1) -> PermitKey:
    """Derive the pseudonymisation key for ``permit_id`` at ``version``."""
    if version < 1:
        raise ValueError("key version starts at 1")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=f"{permit_id}:v{version}".encode())
    return PermitKey(permit_id, version, Secret(f"permit:{permit_id}:v{version}", hkdf.derive(master.value)))
