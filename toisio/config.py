"""One configuration for the whole service.

Every setting has an embedded default so that ``make demo`` runs with nothing
configured: SQLite in the service home, ephemeral Prefect, local Spark.  Each
setting can be overridden by an environment variable ``TOISIO_<NAME>``.

Secrets (the pseudonymisation master key and the audit key) live in the key
store directory, which defaults to a directory *outside* the repository
(``$XDG_DATA_HOME/toisio/keys``) and is created with mode 0700.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path


def _default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "toisio"


@dataclass(frozen=True)
class Settings:
    """Service settings; build with :func:`load_settings`."""

    home: Path = field(default_factory=_default_home)
    database_url: str = ""  # default: sqlite:///<home>/toisio.db
    key_dir: Path | None = None  # default: <home>/keys
    spark_master: str = "local[*]"
    spark_remote: str = ""  # "sc://host:15002" or "local" for a local Spark Connect server
    spark_driver_memory: str = "2g"
    # where executors on other hosts reach the driver (spark.driver.host) and the address it listens on
    # (spark.driver.bindAddress); loopback keeps the embedded mode unreachable from elsewhere
    spark_driver_host: str = "127.0.0.1"
    spark_bind_address: str = "127.0.0.1"
    spark_shuffle_partitions: int = 8
    disclosure_profile: str = "toisio-default"
    dp_approvals_needed: int = 2  # 1 lets differentially private outputs release after one checker
    workspace_quota_mb: int = 512  # scratch space of a workspace's Jupyter root
    workspace_check_seconds: int = 15  # how often a running workspace re-checks that its permit is in force
    workspace_kernel_memory_mb: int = 4096  # per kernel: address space (rlimit) and cgroup memory limit
    workspace_kernel_processes: int = 128  # per kernel: processes and threads (cgroup pids.max / rlimit)
    workspace_kernel_cpu_seconds: int = 4 * 3600  # per kernel: CPU time before the kernel is stopped
    workspace_read_max_kb: int = 256  # largest text file the contents API serves to the browser
    pipeline_max_quarantined_share: float = 0.5  # a registry with more of its rows quarantined fails the run
    pipeline_allow_empty_extracts: bool = False  # an extract with a header and no rows fails the run
    api_url: str = ""  # the REST API the command line calls; empty: the same API in-process
    oidc_issuer: str = ""  # an OpenID Connect provider's issuer URL; empty: local accounts only
    oidc_client_id: str = ""
    oidc_client_secret: str = field(default="", repr=False)  # a secret: never printed
    oidc_require_mfa: bool = True  # refuse a sign-in whose provider reports no multi-factor authentication
    oidc_redirect_base: str = ""  # the API's public URL for the callback; default: as the request came in
    public_url: str = ""  # the portal's public address; https://... makes its cookies Secure
    extracts_dir: Path | None = None  # the controllers' registry extracts; default: <home>/extracts
    retention_days_after_end: int = 0  # delivered data is deleted this many days after a permit ends
    quarantine_retention_days: int = 30  # quarantined rows (they hold raw identity codes) are kept this long
    smtp_host: str = ""  # the SMTP server notifications are e-mailed through; empty: the portal's inbox only
    smtp_port: int = 25
    smtp_from: str = "toisio@localhost"
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)  # a secret: never printed
    smtp_starttls: bool = False

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'toisio.db'}"

    @property
    def keys(self) -> Path:
        return self.key_dir or (self.home / "keys")

    @property
    def extracts(self) -> Path:
        return self.extracts_dir or (self.home / "extracts")

    @property
    def deliveries_dir(self) -> Path:
        return self.home / "deliveries"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"


_ENV_PREFIX = "TOISIO_"


def load_settings(**overrides: object) -> Settings:
    """Settings from defaults, then ``TOISIO_*`` environment variables, then ``overrides``."""
    values: dict[str, object] = {}
    for f in fields(Settings):
        env = os.environ.get(_ENV_PREFIX + f.name.upper())
        if env is None or env == "":
            continue
        if f.name in ("home", "key_dir", "extracts_dir"):
            values[f.name] = Path(env).expanduser()
        elif f.type in ("int", int):
            values[f.name] = int(env)
        elif f.type in ("float", float):
            values[f.name] = float(env)
        elif f.type in ("bool", bool):
            values[f.name] = env.strip().lower() in ("1", "true", "yes", "on")
        else:
            values[f.name] = env
    settings = replace(Settings(), **values)
    return replace(settings, **overrides) if overrides else settings
