"""Where the secure environment keeps a permit's data for analysis (one place that says so)."""

from __future__ import annotations

from pathlib import Path

from toisio.service import Service


def aggregate_dir(svc: Service, permit_id: str) -> Path:
    """Where a data request's minimised dataset is delivered: inside the service, outside every workspace."""
    return svc.settings.home / "aggregate" / permit_id


def analysis_data(svc: Service, permit_id: str) -> Path:
    """The delivered data the service computes on for a permit: the workspace's read-only copy for a data permit,
    the service's own area for a data request."""
    from secure_env.workspace.provision import paths

    data = paths(svc, permit_id).data
    return data if data.exists() else aggregate_dir(svc, permit_id)
