"""How a command-line user proves who they are: a token from ``toisio login`` or ``TOISIO_TOKEN``.

``toisio login`` signs in (password and one-time code) and stores the new API token in the user's
configuration directory (``$XDG_CONFIG_HOME/toisio/token``, default ``~/.config/toisio/token``), a
file of mode 600 in a directory of mode 700.  ``TOISIO_TOKEN`` in the environment takes precedence
(for scripts).  Every user-facing command resolves the token to an :class:`~toisio.identity.Actor`
with :func:`toisio.identity.authenticate`: nobody can act as someone else by naming them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from toisio.errors import Unauthenticated
from toisio.identity import Actor, authenticate

TOKEN_ENV = "TOISIO_TOKEN"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "toisio"


def token_path() -> Path:
    return config_dir() / "token"


def save_token(value: str) -> Path:
    """Store the signed-in token for this OS user (mode 600; replaces any earlier one)."""
    d = config_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    path = token_path()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    os.replace(tmp, path)
    return path


def stored_token() -> str | None:
    """The token from ``TOISIO_TOKEN`` or the stored file (refused if others can read the file)."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    path = token_path()
    if not path.exists():
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise Unauthenticated(f"{path} is readable by others (mode {mode:o}); run `chmod 600 {path}` or sign in "
                              f"again", code="token_file_unsafe")
    return path.read_text().strip() or None


def forget_token() -> bool:
    path = token_path()
    if path.exists():
        path.unlink()
        return True
    return False


def current_actor(svc) -> Actor:
    """The signed-in user; :class:`Unauthenticated` (saying how to sign in) if there is none."""
    token = stored_token()
    if not token:
        raise Unauthenticated("you are not signed in: run `toisio login` (or set TOISIO_TOKEN)",
                              code="unauthenticated")
    return authenticate(svc, token)


def acting(svc, *, as_operator: bool = False) -> Actor:
    """Who a host command acts as: the signed-in user, or with ``--operator`` the operating-system user
    (``operator:<name>``, for process control on the service host)."""
    from toisio.identity import operator

    return operator() if as_operator else current_actor(svc)
