"""``toisio login / logout / whoami / password``, ``toisio tokens ...`` and the operator's ``toisio users ...``.

User commands act as the signed-in user (:mod:`toisio.cli_auth`); ``toisio users`` is an operator
command run on the service host and recorded as ``operator:<OS user>``.
"""

from __future__ import annotations

import contextlib
import sys

import typer
from rich.table import Table

from toisio.app.cli_common import JSON_HELP, print_json
from toisio.app.cli_common import api as _api
from toisio.app.cli_common import run as _run
from toisio.app.cli_common import svc as _svc
from toisio.console import make_console
from toisio.errors import ToisioError

users_app = typer.Typer(help="Users of the service (operator, on the service host).", no_args_is_help=True)
tokens_app = typer.Typer(help="Your API tokens: create, list, rotate, revoke.", no_args_is_help=True)
console = make_console(width=140)


def _me(svc):
    from toisio.cli_auth import current_actor

    return current_actor(svc)


def _secret_input(prompt: str, from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt(prompt, hide_input=True)


def _print_enrolment(e) -> None:
    if e is None:
        return
    if e.password:
        console.print(f"first password (shown once; change it with `toisio password`): {e.password}")
    console.print(f"TOTP secret (shown once; add it to an authenticator app): {e.totp_secret}")
    console.print(f"  or scan this URI as a QR code: {e.totp_uri}")


# ---------------------------------------------------------------- operator: users

@users_app.command("add")
def users_add(user_id: str, name: str = typer.Option(...), email: str = typer.Option(...),
              role: list[str] = typer.Option([], "--role", help="handler, decider, controller, output_checker, "
                                                                  "auditor (repeat for several)"),
              registry: list[str] = typer.Option([], "--registry", help="registries a controller answers for"),
              password_stdin: bool = typer.Option(False, "--password-stdin",
                                                  help="read the first password from standard input "
                                                       "(default: generate one and show it once)"),
              oidc_only: bool = typer.Option(False, "--oidc-only",
                                             help="no local account: the user signs in through an identity "
                                                  "provider linked with `users link-oidc`")) -> None:
    """Create a user with a local account (password + TOTP), shown once."""
    from toisio import identity

    password = _secret_input("password", True) if password_stdin else None
    e = _run(lambda: identity.create_user(_svc(), identity.operator(), user_id, name, email, role, registry,
                                          password=password, local=not oidc_only))
    console.print(f"created {user_id}")
    _print_enrolment(e)


@users_app.command("list")
def users_list(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Every user, their roles, how they sign in and whether they are active."""
    from toisio import identity

    if as_json:
        return print_json(_run(lambda: identity.list_users(_svc())))

    t = Table(title="users")
    for c in ("user", "name", "roles", "registries", "sign-in", "active"):
        t.add_column(c)
    for u in _run(lambda: identity.list_users(_svc())):
        how = ", ".join(([] if not u.local_account else ["password+totp"]) + [f"oidc {i}" for i, _ in u.oidc])
        t.add_row(u.user_id, u.name, ", ".join(sorted(u.roles)), ", ".join(sorted(u.registries)), how or "none",
                  "yes" if u.active else "no")
    console.print(t)


@users_app.command("deactivate")
def users_deactivate(user_id: str) -> None:
    """Deactivate a user: no sign-in, every token revoked."""
    from toisio import identity

    _run(lambda: identity.set_active(_svc(), identity.operator(), user_id, False))
    console.print(f"{user_id} deactivated; their tokens are revoked")


@users_app.command("reactivate")
def users_reactivate(user_id: str) -> None:
    """Let a deactivated user sign in again."""
    from toisio import identity

    _run(lambda: identity.set_active(_svc(), identity.operator(), user_id, True))
    console.print(f"{user_id} reactivated")


@users_app.command("set-roles")
def users_set_roles(user_id: str, role: list[str] = typer.Option([], "--role"),
                    registry: list[str] = typer.Option([], "--registry")) -> None:
    """Replace a user's service roles (and a controller's registries)."""
    from toisio import identity

    _run(lambda: identity.set_roles(_svc(), identity.operator(), user_id, role, registry))
    console.print(f"{user_id}: roles {', '.join(sorted(role)) or 'none'}")


@users_app.command("reset")
def users_reset(user_id: str, password_stdin: bool = typer.Option(False, "--password-stdin")) -> None:
    """A new password and TOTP secret for a local account; every token of the user is revoked."""
    from toisio import identity

    password = _secret_input("password", True) if password_stdin else None
    e = _run(lambda: identity.reset_credentials(_svc(), identity.operator(), user_id, password=password))
    console.print(f"{user_id}: credentials reset")
    _print_enrolment(e)


@users_app.command("link-oidc")
def users_link_oidc(user_id: str, issuer: str = typer.Option(..., "--issuer"),
                    subject: str = typer.Option(..., "--subject")) -> None:
    """Let an OpenID Connect identity (issuer + subject) sign in as this user."""
    from toisio import identity

    _run(lambda: identity.link_oidc(_svc(), identity.operator(), user_id, issuer, subject))
    console.print(f"{user_id}: signs in also as {subject} at {issuer}")


# ---------------------------------------------------------------- users: signing in

def login(user_id: str = typer.Option(..., "--user", prompt="user id"),
          password_stdin: bool = typer.Option(False, "--password-stdin",
                                              help="read the password from standard input (for scripts)"),
          code: str | None = typer.Option(None, "--code", help="the one-time code (asked for if not given)"),
          days: int = typer.Option(30, "--days", help="how long the stored token is valid")) -> None:
    """Sign in with your password and one-time code; stores a token for the other commands."""
    from toisio import identity
    from toisio.cli_auth import save_token

    password = _secret_input("password", password_stdin)
    code = code or typer.prompt("one-time code")
    new = _run(lambda: identity.login_local(_svc(), user_id, password, code, token_name="cli", days=days))
    path = save_token(new.value)
    console.print(f"signed in as {user_id}; token {new.info.token_id} valid until {new.info.expires_at[:10]}, "
                  f"stored in {path}")


def logout() -> None:
    """Revoke the stored token and forget it."""
    from toisio import identity
    from toisio.cli_auth import forget_token, stored_token

    token = stored_token()
    if token:
        with contextlib.suppress(ToisioError):  # an expired or revoked token is forgotten all the same
            identity.sign_out(_svc(), token)
    console.print("signed out" if forget_token() else "not signed in")


def whoami() -> None:
    """Who the stored token signs you in as, with your roles."""
    a = _run(lambda: _me(_svc()))
    console.print(f"{a.user_id} ({', '.join(sorted(a.roles)) or 'no service roles'}; signed in with "
                  f"{a.method.value}{', with a second factor' if a.mfa else ''})")


def password() -> None:
    """Change your own password."""
    from toisio import identity

    svc = _svc()
    me = _run(lambda: _me(svc))
    old = typer.prompt("current password", hide_input=True)
    new = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    _run(lambda: identity.change_password(svc, me, old, new))
    console.print("password changed")


# ---------------------------------------------------------------- users: tokens

@tokens_app.command("create")
def tokens_create(name: str = typer.Option(..., "--name", help="what the token is for, e.g. 'laptop script'"),
                  days: int = typer.Option(90, "--days", help="valid for this many days (at most 366)")) -> None:
    """A new API token for you; its value is shown once."""
    api = _api()
    new = _run(lambda: api.post("/tokens", json={"name": name, "days": days}))
    console.print(f"token {new['info']['token_id']} '{name}' valid until {new['info']['expires_at'][:10]} "
                  f"(shown once):")
    sys.stdout.write(new["token"] + "\n")


@tokens_app.command("list")
def tokens_list(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Your tokens: name, when made, when they expire, last use, status."""
    api = _api()
    rows = _run(lambda: api.get("/tokens"))
    if as_json:
        return print_json(rows)
    t = Table(title="API tokens")
    for c in ("id", "name", "created", "expires", "last used", "status"):
        t.add_column(c)
    for i in rows:
        t.add_row(i["token_id"], i["name"], i["created_at"][:16], i["expires_at"][:16],
                  (i["last_used_at"] or "never")[:16], i["status"])
    console.print(t)


@tokens_app.command("revoke")
def tokens_revoke(token_id: str) -> None:
    """Revoke one of your tokens at once."""
    api = _api()
    _run(lambda: api.delete(f"/tokens/{token_id}"))
    console.print(f"token {token_id} revoked")


@tokens_app.command("rotate")
def tokens_rotate(token_id: str, days: int = typer.Option(90, "--days")) -> None:
    """Replace a token by a new one with the same name (the old one stops working now)."""
    api = _api()
    new = _run(lambda: api.post(f"/tokens/{token_id}/rotate", days=days))
    console.print(f"token {token_id} revoked; new token {new['info']['token_id']} valid until "
                  f"{new['info']['expires_at'][:10]} (shown once):")
    sys.stdout.write(new["token"] + "\n")


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)
    app.command("password")(password)
