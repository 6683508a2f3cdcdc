"""Attachments (research plan, ethics statement): stored content-addressed, referenced by checksum.

``toisio permits attach FILE`` stores a file under ``$TOISIO_HOME/attachments/<sha256>`` and
prints the ``{filename, sha256}`` reference to put in the application file.  A submitted
application whose attachments are not in the store, or no longer match their checksum, is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from permits.application import ApplicationForm, Attachment
from toisio.errors import Invalid
from toisio.service import Service


class AttachmentMissing(Invalid):
    """An application names an attachment that is not in the attachment store."""

    code = "attachment_missing"


def _root(svc: Service) -> Path:
    return svc.settings.home / "attachments"


def store_bytes(svc: Service, filename: str, data: bytes) -> Attachment:
    """Store ``data`` and return its reference."""
    sha = hashlib.sha256(data).hexdigest()
    target = _root(svc) / sha
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o440)
        os.replace(tmp, target)
    return Attachment(filename=filename, sha256=sha)


def store(svc: Service, path: str | Path) -> Attachment:
    """Store a file and return its reference."""
    path = Path(path)
    return store_bytes(svc, path.name, path.read_bytes())


def verify(svc: Service, attachment: Attachment) -> None:
    """Raise :class:`AttachmentMissing` unless the attachment is stored with its checksum."""
    target = _root(svc) / attachment.sha256
    if not target.exists():
        raise AttachmentMissing(f"attachment {attachment.filename} (sha256 {attachment.sha256[:12]}...) is not in "
                                f"the attachment store; add it with 'toisio permits attach'")
    if hashlib.sha256(target.read_bytes()).hexdigest() != attachment.sha256:
        raise AttachmentMissing(f"stored attachment {attachment.filename} no longer matches its checksum")


def verify_form(svc: Service, form: ApplicationForm) -> None:
    """Every attachment the form refers to is stored and intact."""
    for a in (form.research_plan, form.ethics_statement):
        if a is not None:
            verify(svc, a)


def read(svc: Service, attachment: Attachment) -> bytes:
    verify(svc, attachment)
    return (_root(svc) / attachment.sha256).read_bytes()


def copy_to(svc: Service, attachment: Attachment, dest: Path) -> Path:
    verify(svc, attachment)
    return Path(shutil.copy(_root(svc) / attachment.sha256, dest))
