"""Key store and per-permit key derivation."""

import stat

import pytest

from pseudonymise.keys import derive_permit_key
from pseudonymise.pseudonym import pseudonym_python
from toisio.keystore import KeyStoreError, Secret, audit_key, master_key


def test_master_key_created_once_with_mode_600(tmp_path):
    k1 = master_key(tmp_path / "keys")
    k2 = master_key(tmp_path / "keys")
    assert k1.value == k2.value and len(k1.value) == 32
    mode = stat.S_IMODE((tmp_path / "keys" / "master.key").stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700


def test_audit_and_master_keys_differ(tmp_path):
    assert master_key(tmp_path).value != audit_key(tmp_path).value


def test_key_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TOISIO_MASTER_KEY", "ab" * 32)
    assert master_key(tmp_path / "unused").value == bytes.fromhex("ab" * 32)
    assert not (tmp_path / "unused").exists()


def test_refuses_key_dir_inside_git_worktree(tmp_path):
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    with pytest.raises(KeyStoreError, match="inside a git work tree"):
        master_key(tmp_path / "repo" / "keys")


def test_refuses_world_readable_key(tmp_path):
    master_key(tmp_path)
    (tmp_path / "master.key").chmod(0o644)
    with pytest.raises(KeyStoreError, match="readable by others"):
        master_key(tmp_path)


def test_secret_never_prints_its_value():
    s = Secret("x", bytes.fromhex("c0ffee" * 8))
    assert "c0ffee" not in repr(s) and "c0ffee" not in str(s) and "c0ffee" not in f"{s}"


def test_permit_keys_differ_between_permits_and_versions():
    master = Secret("m", b"\x01" * 32)
    a = derive_permit_key(master, "TOISIO-2026-1")
    b = derive_permit_key(master, "TOISIO-2026-2")
    a2 = derive_permit_key(master, "TOISIO-2026-1", 2)
    assert len({a.secret.value, b.secret.value, a2.secret.value}) == 3
    assert derive_permit_key(master, "TOISIO-2026-1").secret.value == a.secret.value
    assert a.key_id.startswith("TOISIO-2026-1/v1/") and a.secret.value.hex() not in repr(a)


def test_pseudonyms_unlinkable_across_permits():
    master = Secret("m", b"\x02" * 32)
    a = derive_permit_key(master, "TOISIO-2026-1")
    b = derive_permit_key(master, "TOISIO-2026-2")
    codes = [f"0101{y:02d}-{n:03d}X" for y in range(10) for n in range(2, 50)]
    pa = {pseudonym_python(a, c) for c in codes}
    pb = {pseudonym_python(b, c) for c in codes}
    assert len(pa) == len(codes) and not (pa & pb)
