"""Finding and resuming paused flow runs by tag (shared by the application and output flows)."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.flow_runs import resume_flow_run


def tagged_runs(tag: str, *, paused_only: bool = False) -> list:
    """Flow runs carrying ``tag`` (newest first)."""
    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])) if paused_only else None
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]), state=state),
                                     sort=FlowRunSort.START_TIME_DESC, limit=50)


def resume_tagged(tag: str, run_input: dict[str, Any]) -> int:
    """Resume every paused run carrying ``tag``; returns how many."""
    runs = tagged_runs(tag, paused_only=True)
    for run in runs:
        resume_flow_run(run.id, run_input=run_input)
    return len(runs)


def pause_key(*parts: object) -> str:
    """A pause key Prefect accepts (lower-case letters, digits and dashes)."""
    text = "-".join(str(p) for p in parts).lower()
    return "".join(ch if ch.isalnum() else "-" for ch in text)
