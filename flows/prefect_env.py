"""Prefect settings for the embedded default: an ephemeral local server, no telemetry.

Call :func:`configure_prefect` before importing ``prefect``.  It only sets
variables that are not set already, so a deployment can point ``PREFECT_API_URL``
at a real Prefect server instead.
"""

from __future__ import annotations

import os

from toisio.config import Settings


def configure_prefect(settings: Settings) -> None:
    """Default Prefect to ephemeral mode with its database under the service home."""
    home = settings.home / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    defaults = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_UI_ENABLED": "false",
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)
