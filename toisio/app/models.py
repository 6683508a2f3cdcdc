"""Every table of the service, collected for the migrations (the foundation itself names no stage)."""

from __future__ import annotations


def import_all_models() -> None:
    """Import every stage's table module so that ``toisio.db.Base.metadata`` is complete."""
    import permits.models  # noqa: F401
    import pseudonymise.runs  # noqa: F401
    import secure_env.airlock.models  # noqa: F401
    import toisio.audit  # noqa: F401
    import toisio.identity  # noqa: F401
    import toisio.notify  # noqa: F401
    import toisio.sessions  # noqa: F401
