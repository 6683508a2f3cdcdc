"""Generated Jupyter configuration that locks a workspace down on the server side.

Hiding the download button does not stop ``GET /api/contents`` from returning a file (see the
shared platform notes), so the controls that matter are on the server: the data lies outside the
Jupyter root, the ``/files`` route is removed, nbconvert and terminals are refused by the
authorizer, hidden files are not served, the scratch quota is enforced by the contents manager,
data-like files are not served to the browser and uploads are refused, and kernels start only from
one kernelspec that runs in the bubblewrap sandbox of :mod:`secure_env.workspace.sandbox` (no network, an
unprivileged uid with no capabilities, the data read-only, no service state mounted at all, an
empty environment, limits on processes, memory, CPU time and file size).  The page config removes the
download, share, copy-output and open-in-new-tab commands and locks all plugins.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from secure_env.workspace.sandbox import (
    LAUNCH_SCRIPT,
    Cgroups,
    KernelLimits,
    SandboxSpec,
    bwrap_argv,
    launch_argv,
    write_support,
)

#: the DP query service's socket, in the runtime directory every kernel's sandbox binds
DP_SOCKET = "dp.sock"

DISABLED_EXTENSIONS = {
    "@jupyterlab/docmanager-extension:download": True,
    "@jupyterlab/filebrowser-extension:download": True,
    "@jupyterlab/filebrowser-extension:share-file": True,
    "@jupyterlab/docmanager-extension:open-browser-tab": True,
    "@jupyterlab/filebrowser-extension:open-browser-tab": True,
    "@jupyterlab/notebook-extension:export": True,
    "@jupyterlab/notebook-extension:copy-output": True,
    "@jupyterlab/extensionmanager-extension": True,
    "@jupyterlab/pluginmanager-extension": True,
    "@jupyterlab/terminal-extension": True,
    "@jupyterlab/apputils-extension:announcements": True,
}
#: Also merged into the page config: no rebuild check (the build route is refused anyway).
PAGE_SETTINGS = {"buildAvailable": False, "buildCheck": False}
KERNEL_NAME = "toisio-offline"
#: JupyterLab's menu bar gets a "Release" menu opening the airlock's release page (served by the same server,
#: :mod:`toisio.app.release_page`) in a browser tab of its own; written as the workspace's user settings
#: (the server's JUPYTER_CONFIG_DIR is the generated config directory), so no JupyterLab extension is built.
RELEASE_PAGE = "/toisio/release"
MAIN_MENU = {"menus": [{"id": "jp-mainmenu-toisio-release", "label": "Release", "rank": 1000, "items": [
    {"command": "help:open", "args": {"url": RELEASE_PAGE, "text": "Ask for a release", "newBrowserTab": True},
     "rank": 0}]}]}


@dataclass(frozen=True)
class Lockdown:
    """What the generated configuration for one workspace is built from."""

    permit_id: str
    workspace: Path
    home: Path
    key_dir: Path
    quota_mb: int
    check_seconds: int = 15
    read_max_bytes: int = 256 * 1024  # largest text file the contents API serves to the browser
    limits: KernelLimits = KernelLimits()
    cgroups: Cgroups = Cgroups(None, None, 1)
    python: tuple[Path, ...] = ()  # the Python environment, bound read-only into the sandbox
    code: tuple[Path, ...] = ()  # the service's code packages, bound read-only

    @property
    def root(self) -> Path:
        return self.workspace / "root"

    @property
    def data(self) -> Path:
        return self.workspace / "data"

    @property
    def runtime_link(self) -> Path:
        """A short path to the runtime directory (Unix socket paths are limited to 107 bytes)."""
        import hashlib

        return Path("/tmp") / f"toisio-rt-{hashlib.sha256(str(self.workspace).encode()).hexdigest()[:12]}"

    @property
    def quota_bytes(self) -> int:
        return self.quota_mb * 1024 * 1024

    @property
    def sandbox(self) -> SandboxSpec:
        """The kernel's sandbox: the data read-only, the Jupyter root and runtime directory, nothing else."""
        env = (("TOISIO_DATA", str(self.data)), ("TOISIO_SCRATCH", str(self.root / "scratch")),
               ("TOISIO_PERMIT", self.permit_id), ("MPLBACKEND", "module://matplotlib_inline.backend_inline"),
               ("TOISIO_DP_SOCKET", str(self.runtime_link / DP_SOCKET)))
        return SandboxSpec(data=self.data, root=self.root, runtime=self.workspace / "runtime",
                           runtime_link=self.runtime_link, support=self.workspace / "config" / "sandbox",
                           limits=replace(self.limits, file_size_bytes=self.quota_bytes), python=self.python,
                           code=self.code, env=env)


def kernel_argv(lock: Lockdown, config_dir: Path, python: str = sys.executable) -> list[str]:
    """Kernel command: its own cgroups, rlimits, then the bubblewrap sandbox running ipykernel."""
    limits = lock.sandbox.limits
    inner = bwrap_argv(lock.sandbox, [*limits.prlimit_argv(), python, "-m", "ipykernel_launcher", "-f",
                                      "{connection_file}"])
    return launch_argv(config_dir / "kernel-launch.sh", lock.cgroups, limits, inner)


def server_config(lock: Lockdown) -> str:
    """The jupyter_server configuration file (Python) for one workspace."""
    settings = {"toisio_permit": lock.permit_id, "toisio_quota_bytes": lock.quota_bytes,
                "toisio_read_max_bytes": lock.read_max_bytes,
                "toisio_check_seconds": lock.check_seconds, "toisio_data": str(lock.data)}
    return f'''# Generated by toisio: workspace lockdown for permit {lock.permit_id} (regenerated on every start)
c = get_config()  # noqa: F821
c.ServerApp.root_dir = {str(lock.root)!r}
c.ServerApp.ip = "127.0.0.1"
c.ServerApp.open_browser = False
c.ServerApp.allow_remote_access = False
c.ServerApp.allow_unauthenticated_access = False
c.ServerApp.allow_root = True
c.ServerApp.terminals_enabled = False
c.ServerApp.identity_provider_class = "secure_env.workspace.jupyter_auth.WorkspaceIdentityProvider"
c.ServerApp.authorizer_class = "secure_env.workspace.jupyter_auth.WorkspaceAuthorizer"
c.ServerApp.contents_manager_class = "secure_env.workspace.jupyter_audit.QuotaContentsManager"
c.ServerApp.kernel_manager_class = "secure_env.workspace.jupyter_audit.AuditedKernelManager"
c.ServerApp.kernel_websocket_connection_class = "secure_env.workspace.jupyter_audit.AuditedKernelConnection"
c.ServerApp.jpserver_extensions = {{"secure_env.workspace.jupyter_audit": True,
                                   "toisio.app.release_page": True}}
c.ServerApp.tornado_settings = {settings!r}
c.FileContentsManager.files_handler_class = None
c.ContentsManager.allow_hidden = False
c.KernelSpecManager.allowed_kernelspecs = {{{KERNEL_NAME!r}}}
c.KernelSpecManager.ensure_native_kernel = False
c.MappingKernelManager.default_kernel_name = {KERNEL_NAME!r}
c.KernelManager.transport = "ipc"
c.MappingKernelManager.cull_idle_timeout = 3600
c.LabApp.lock_all_plugins = True
c.LabApp.extension_manager = "readonly"
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
'''


def write_config(config_dir: Path, lock: Lockdown) -> None:
    """Write the server config, the page config, the kernel launch script and the one kernelspec."""
    (config_dir / "labconfig").mkdir(parents=True, exist_ok=True)
    (config_dir / "jupyter_server_config.py").write_text(server_config(lock))
    (config_dir / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": DISABLED_EXTENSIONS, **PAGE_SETTINGS}, indent=2, sort_keys=True))
    menu = config_dir / "lab" / "user-settings" / "@jupyterlab" / "mainmenu-extension" / "plugin.jupyterlab-settings"
    menu.parent.mkdir(parents=True, exist_ok=True)
    menu.write_text(json.dumps(MAIN_MENU, indent=2))
    (config_dir / "kernel-launch.sh").write_text(LAUNCH_SCRIPT)
    write_support(config_dir / "sandbox")
    kdir = config_dir / "kernels" / KERNEL_NAME
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": kernel_argv(lock, config_dir), "display_name": "Python (no network, read-only data)",
        "language": "python", "metadata": {"toisio_permit": lock.permit_id},
    }, indent=2))
