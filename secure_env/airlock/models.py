"""Database tables of the secure environment: the differential-privacy budget ledger and the output airlock
(requests, their file groups, files, comments, votes and submitted reviews)."""

from __future__ import annotations

from sqlalchemy import Boolean, Float, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from toisio.db import Base


class DpBudgetRow(Base):
    """The total privacy budget (epsilon, delta) granted to a permit."""

    __tablename__ = "dp_budget"

    permit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    set_by: Mapped[str] = mapped_column(String(100))
    set_at: Mapped[str] = mapped_column(String(32))


class DpSpendRow(Base):
    """One differentially private query charged to a permit's budget (written before it runs)."""

    __tablename__ = "dp_spend"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    permit_id: Mapped[str] = mapped_column(String(64), index=True)
    query: Mapped[str] = mapped_column(Text)
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(100))
    ts: Mapped[str] = mapped_column(String(32))
    #: the HMAC the DP query service signed its answer with (None for a charge made without the service)
    receipt: Mapped[str | None] = mapped_column(String(64), nullable=True)


class OutputRequestRow(Base):
    """A request to release files from a permit's workspace."""

    __tablename__ = "output_request"

    request_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    permit_id: Mapped[str] = mapped_column(String(64), index=True)
    requester: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(32), index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))
    released_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    release_dir: Mapped[str | None] = mapped_column(Text, nullable=True)


class OutputFileRow(Base):
    """One file of an output request, with its context and automatic check report."""

    __tablename__ = "output_file"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(80), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    context: Mapped[str] = mapped_column(Text)
    check_status: Mapped[str] = mapped_column(String(16))
    check_report: Mapped[str] = mapped_column(Text)
    differentially_private: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the group (OpenSAFELY's model) the file belongs to; its context and controls are the group's
    group_name: Mapped[str] = mapped_column(String(100), default="default", server_default="default")
    #: a supporting file: shown to the reviewers to judge the outputs, never voted on, never released
    supporting: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class OutputGroupRow(Base):
    """A group of files of one request, with the context and the disclosure controls they share."""

    __tablename__ = "output_group"
    __table_args__ = (UniqueConstraint("request_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(80), index=True)
    name: Mapped[str] = mapped_column(String(100))
    context: Mapped[str] = mapped_column(Text, default="")
    controls: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[str] = mapped_column(String(32))


class OutputCommentRow(Base):
    """A comment on a group of a request: ``public`` (the requester sees it once the round's outcome is known)
    or ``private`` (output checkers and auditors only)."""

    __tablename__ = "output_comment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(80), index=True)
    group_name: Mapped[str] = mapped_column(String(100))
    round: Mapped[int] = mapped_column(Integer)
    author: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)
    visibility: Mapped[str] = mapped_column(String(16))
    ts: Mapped[str] = mapped_column(String(32))


class ReviewVoteRow(Base):
    """A checker's vote on one file in one review round (revoked votes are kept, flagged)."""

    __tablename__ = "review_vote"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(80), index=True)
    file_id: Mapped[int] = mapped_column(Integer)
    round: Mapped[int] = mapped_column(Integer)
    reviewer: Mapped[str] = mapped_column(String(100))
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    ts: Mapped[str] = mapped_column(String(32))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class ReviewSubmissionRow(Base):
    """A checker's submitted review of a request in one round."""

    __tablename__ = "review_submission"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(80), index=True)
    round: Mapped[int] = mapped_column(Integer)
    reviewer: Mapped[str] = mapped_column(String(100))
    ts: Mapped[str] = mapped_column(String(32))
