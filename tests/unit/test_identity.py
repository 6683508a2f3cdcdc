"""Identity in the foundation (issue 13, item 1): local accounts (argon2 + TOTP), OpenID Connect, expiring
API tokens with rotation and revocation, deactivation, and identity state covered by the audit chain."""

import time
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from sqlalchemy import select, update

from tests.factories import make_token, make_user
from toisio import audit, identity
from toisio.errors import Conflict, Forbidden, Invalid, Unauthenticated
from toisio.identity import ApiTokenRow, CredentialRow, Role, UserRow

OP = identity.operator("root")
PASSWORD = "correct horse battery staple"


def _local(svc, user_id="lea", roles=("handler",)):
    e = identity.create_user(svc, OP, user_id, "Lea", f"{user_id}@x.example", roles, password=PASSWORD)
    return e, pyotp.TOTP(e.totp_secret)


def _code(totp, offset_steps=0):
    return totp.at(datetime.now(UTC) + timedelta(seconds=offset_steps * totp.interval))


def _clear_of_a_step_boundary(totp, margin: float = 5.0) -> None:
    """Wait into the next time step if fewer than ``margin`` seconds of this one are left, so that a code taken
    now relative to this step is judged in the same step (a sign-in takes an argon2 verification)."""
    left = totp.interval - time.time() % totp.interval
    if left < margin:
        time.sleep(left + 0.1)


def test_a_local_account_stores_an_argon2_hash_and_a_sealed_totp_secret(svc):
    e, totp = _local(svc)
    assert e.password is None and e.totp_uri.startswith("otpauth://totp/Toisio:lea")
    with svc.engine.connect() as conn:
        cred = conn.execute(select(CredentialRow).where(CredentialRow.user_id == "lea")).one()
    assert cred.password_hash.startswith("$argon2id$") and PASSWORD not in cred.password_hash
    assert e.totp_secret not in cred.totp_secret  # sealed with the credential key
    generated = identity.create_user(svc, OP, "max", "Max", "m@x.example")
    assert generated.password and len(generated.password) >= identity.MIN_PASSWORD_LENGTH


def test_sign_in_needs_the_password_and_a_fresh_one_time_code(svc):
    _, totp = _local(svc)
    with pytest.raises(Unauthenticated, match="sign-in failed"):
        identity.login_local(svc, "lea", "wrong password!!", _code(totp))
    with pytest.raises(Unauthenticated, match="sign-in failed"):
        identity.login_local(svc, "lea", PASSWORD, "000000" if _code(totp) != "000000" else "111111")
    _clear_of_a_step_boundary(totp)
    used = _code(totp, -1)  # the step before this one: within the window of one step either side
    new = identity.login_local(svc, "lea", PASSWORD, used, token_name="laptop")
    actor = identity.authenticate(svc, new.value)
    assert actor.user_id == "lea" and actor.roles == {Role.HANDLER} and actor.mfa
    assert actor.method is identity.AuthMethod.PASSWORD_TOTP
    # the same code is not accepted twice (the very same string: computing it again could, across a 30-second
    # boundary, give the next step's code, which is fresh)
    with pytest.raises(Unauthenticated):
        identity.login_local(svc, "lea", PASSWORD, used)
    with svc.engine.connect() as conn:
        actions = [e.action for e in audit.events(conn, subject="user:lea")]
    assert actions.count("auth.login_failed") == 3 and actions.count("auth.login") == 1


def test_five_failures_lock_the_account(svc):
    _, totp = _local(svc)
    for _ in range(identity.MAX_FAILED_LOGINS):
        with pytest.raises(Unauthenticated):
            identity.login_local(svc, "lea", "not the password", _code(totp))
    with pytest.raises(Unauthenticated, match="too many failed sign-ins") as exc:
        identity.login_local(svc, "lea", PASSWORD, _code(totp))
    assert exc.value.code == "account_locked"


def test_an_unknown_user_and_a_user_without_local_account_fail_alike(svc):
    make_user(svc, "oidc-only")
    for user in ("nobody", "oidc-only"):
        with pytest.raises(Unauthenticated, match="sign-in failed"):
            identity.login_local(svc, user, PASSWORD, "123456")


def test_tokens_expire_and_can_be_rotated_and_revoked(svc, monkeypatch):
    lea = make_user(svc, "lea", ("handler",))
    first = identity.create_token(svc, lea, "script", days=1)
    assert identity.authenticate(svc, first.value).user_id == "lea"
    [info] = identity.list_tokens(svc, lea)
    assert info.name == "script" and info.last_used_at is not None and info.status == "active"
    rotated = identity.rotate_token(svc, lea, first.info.token_id, days=30)
    with pytest.raises(Unauthenticated, match="revoked") as exc:
        identity.authenticate(svc, first.value)
    assert exc.value.code == "token_revoked" and exc.value.http_status == 401
    assert identity.authenticate(svc, rotated.value).user_id == "lea"
    identity.revoke_token(svc, lea, rotated.info.token_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        identity.authenticate(svc, rotated.value)
    later = identity.create_token(svc, lea, "short", days=1)

    class Tomorrow(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(days=1, seconds=1)

    monkeypatch.setattr(identity, "datetime", Tomorrow)
    with pytest.raises(Unauthenticated, match="expired") as exc:
        identity.authenticate(svc, later.value)
    assert exc.value.code == "token_expired"


def test_token_limits_and_who_manages_whose_tokens(svc):
    lea, max_ = make_user(svc, "lea"), make_user(svc, "max")
    with pytest.raises(Invalid, match="1-366 days"):
        identity.create_token(svc, lea, "forever", days=10_000)
    mine = identity.create_token(svc, lea, "mine")
    with pytest.raises(Forbidden, match="only their own tokens"):
        identity.revoke_token(svc, max_, mine.info.token_id)
    with pytest.raises(Forbidden):
        identity.list_tokens(svc, max_, user_id="lea")
    assert identity.list_tokens(svc, OP, user_id="lea")[0].token_id == mine.info.token_id
    with pytest.raises(Unauthenticated, match="unknown token"):
        identity.authenticate(svc, "tsk_" + "0" * 12 + "_guess")
    with pytest.raises(Unauthenticated, match="not signed in|no credentials"):
        identity.authenticate(svc, "")


def test_only_an_operator_manages_users_and_deactivation_revokes_every_token(svc):
    lea = make_user(svc, "lea", ("handler",))
    with pytest.raises(Forbidden, match="only an operator"):
        identity.create_user(svc, lea, "eve", "Eve", "e@x.example", ("decider",))
    with pytest.raises(Forbidden, match="only an operator"):
        identity.set_roles(svc, lea, "lea", ("decider",))
    with pytest.raises(Invalid, match="unknown or ungrantable role"):
        identity.create_user(svc, OP, "eve", "Eve", "e@x.example", ("system",))
    with pytest.raises(Conflict, match="already exists"):
        identity.create_user(svc, OP, "lea", "Lea", "l@x.example")
    token = make_token(svc, lea)
    identity.set_active(svc, OP, "lea", False)
    with pytest.raises(Unauthenticated, match="revoked|deactivated"):
        identity.authenticate(svc, token)
    with pytest.raises(Forbidden):
        identity.create_token(svc, lea, "again", user_id="max")
    identity.set_active(svc, OP, "lea", True)
    with pytest.raises(Unauthenticated, match="revoked"):
        identity.authenticate(svc, token)  # reactivation does not bring old tokens back
    assert identity.authenticate(svc, make_token(svc, "lea")).user_id == "lea"
    with svc.engine.connect() as conn:
        by = {e.action: e.actor for e in audit.events(conn, subject="user:lea")}
    assert by["user.deactivated"] == "operator:root"


def test_roles_or_tokens_edited_behind_the_service_are_refused(svc):
    """A user given the decider role, or a revoked token revived, by a direct database edit is refused at
    authentication and named by `audit verify` (the identity state is covered by the audit chain)."""
    make_user(svc, "lea", ("handler",))
    token = make_token(svc, "lea")
    with svc.engine.begin() as conn:
        conn.execute(update(UserRow).where(UserRow.user_id == "lea").values(roles='["decider", "handler"]'))
    with pytest.raises(Unauthenticated, match="differs from what the audit log recorded") as exc:
        identity.authenticate(svc, token)
    assert exc.value.code == "identity_tampered"
    assert [s for s, _ in identity.verify_identities(svc)] == ["user:lea"]
    with svc.engine.begin() as conn:
        conn.execute(update(UserRow).where(UserRow.user_id == "lea").values(roles='["handler"]'))
    assert identity.authenticate(svc, token).roles == {Role.HANDLER}
    old = identity.create_token(svc, identity.operator(), "old", user_id="lea")
    identity.revoke_token(svc, OP, old.info.token_id)
    with svc.engine.begin() as conn:
        conn.execute(update(ApiTokenRow).where(ApiTokenRow.token_id == old.info.token_id).values(revoked_at=None))
    with pytest.raises(Unauthenticated, match="differs from what the audit log recorded"):
        identity.authenticate(svc, old.value)
    assert [s for s, _ in identity.verify_identities(svc)] == [f"token:{old.info.token_id}"]


def test_a_token_inserted_behind_the_service_is_refused(svc):
    make_user(svc, "lea", ("handler",))
    forged = "tsk_aaaaaaaaaaaa_forged-by-sql"
    with svc.engine.begin() as conn:
        conn.execute(ApiTokenRow.__table__.insert().values(
            token_id="aaaaaaaaaaaa", user_id="lea", name="x", sha256=identity.token_hash(forged),
            created_at="2026-01-01T00:00:00.000000Z", expires_at="2099-01-01T00:00:00.000000Z", method="token",
            mfa=False))
    with pytest.raises(Unauthenticated, match="differs from what the audit log recorded"):
        identity.authenticate(svc, forged)


def test_baselines_vouch_for_users_created_before_the_chain_covered_them(svc):
    with svc.engine.begin() as conn:
        conn.execute(UserRow.__table__.insert().values(user_id="old", name="Old", email="o@x.example",
                                                       roles='["auditor"]', registries="[]", active=True))
    assert [s for s, _ in identity.verify_identities(svc)] == ["user:old"]
    assert identity.record_baselines(svc, OP) == ["old"]
    assert identity.record_baselines(svc, OP) == []
    assert identity.verify_identities(svc) == []


def test_mfa_is_read_from_the_providers_claims():
    assert identity.mfa_from_claims({"amr": ["pwd", "otp"]})
    assert identity.mfa_from_claims({"amr": "mfa"})
    assert identity.mfa_from_claims({"acr": "http://eidas.europa.eu/LoA/substantial"})
    assert not identity.mfa_from_claims({"amr": ["pwd"]})
    assert not identity.mfa_from_claims({})


def test_oidc_sign_in_needs_a_linked_identity_and_mfa(svc):
    make_user(svc, "lea", ("handler",))
    iss = "https://idp.example"
    with pytest.raises(Unauthenticated, match="sign-in failed"):
        identity.login_oidc(svc, {"iss": iss, "sub": "L1", "amr": ["otp"]})
    identity.link_oidc(svc, OP, "lea", iss, "L1")
    with pytest.raises(Conflict, match="already signs in"):
        identity.link_oidc(svc, OP, "lea", iss, "L1")
    with pytest.raises(Unauthenticated, match="multi-factor") as exc:
        identity.login_oidc(svc, {"iss": iss, "sub": "L1", "amr": ["pwd"]})
    assert exc.value.code == "mfa_required"
    new = identity.login_oidc(svc, {"iss": iss, "sub": "L1", "amr": ["pwd", "otp"]})
    actor = identity.authenticate(svc, new.value)
    assert actor.user_id == "lea" and actor.method is identity.AuthMethod.OIDC and actor.mfa
    # a different issuer with the same subject is someone else
    with pytest.raises(Unauthenticated):
        identity.login_oidc(svc, {"iss": "https://other.example", "sub": "L1", "amr": ["otp"]})


# ---------------------------------------------------------------- tokens kept verified between requests


def test_a_token_revoked_by_another_process_stops_working_at_once(svc):
    from toisio.service import Service

    make_user(svc, "lea", roles=("handler",))
    token = make_token(svc, "lea")
    assert identity.authenticate(svc, token).user_id == "lea"
    other = Service(svc.settings)  # another server process
    [info] = identity.list_tokens(other, OP, user_id="lea")
    identity.revoke_token(other, OP, info.token_id)
    with pytest.raises(Unauthenticated) as exc:
        identity.authenticate(svc, token)
    assert exc.value.code == "token_revoked"


def test_a_role_change_by_another_process_is_seen_at_the_next_request(svc):
    from toisio.service import Service

    make_user(svc, "lea", roles=("handler",))
    token = make_token(svc, "lea")
    assert identity.authenticate(svc, token).roles == {Role.HANDLER}
    identity.set_roles(Service(svc.settings), OP, "lea", ["decider"])
    assert identity.authenticate(svc, token).roles == {Role.DECIDER}


@pytest.mark.parametrize("edit", [
    "UPDATE app_user SET roles='[\"handler\", \"decider\", \"operator\"]' WHERE user_id='lea'",
    "UPDATE api_token SET expires_at='2999-01-01T00:00:00.000000Z' WHERE user_id='lea'",
])
def test_an_identity_edited_after_a_request_is_refused_at_the_next(svc, edit):
    make_user(svc, "lea", roles=("handler",))
    token = make_token(svc, "lea")
    identity.authenticate(svc, token)
    with svc.engine.begin() as conn:
        conn.exec_driver_sql(edit)
    with pytest.raises(Unauthenticated) as exc:
        identity.authenticate(svc, token)
    assert exc.value.code == "identity_tampered"
