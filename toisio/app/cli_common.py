"""What every command group of the `toisio` command shares: the error console, running a step so that a
user error is printed as ``refused (code): message`` (never a traceback), the service, and the API client
as the signed-in user."""

from __future__ import annotations

from toisio.console import make_console, run_or_exit

err = make_console(stderr=True)


def run(fn):
    """``fn()``, or exit 1 printing the user error it raised."""
    return run_or_exit(fn, err)


def svc():
    """The service from the environment."""
    from toisio.service import service

    return service()


def api():
    """The REST API client, authenticated as the signed-in user (``toisio login`` or ``TOISIO_TOKEN``)."""
    from toisio.app.client import api_client

    return run(lambda: api_client(svc()))


def print_json(data) -> None:
    """Print ``data`` as JSON on standard output (``--json`` on a listing: for scripts)."""
    import dataclasses
    import json
    import sys
    from datetime import date, datetime

    def default(o):
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        if isinstance(o, (date, datetime)):
            return o.isoformat()
        if isinstance(o, (set, frozenset)):
            return sorted(str(x) for x in o)
        return str(o)

    sys.stdout.write(json.dumps(data, default=default, indent=2, ensure_ascii=False) + "\n")


JSON_HELP = "print the listing as JSON (for scripts)"
