"""The workspace stage: each data permit's own JupyterLab, its data read-only, no network, nothing out.

``provision`` creates and destroys a permit's workspace and its analysts' tokens; ``server`` starts and
stops its JupyterLab; ``sandbox`` and ``lockdown`` build the kernel's bubblewrap sandbox and the server's
configuration; ``jupyter_auth`` and ``jupyter_audit`` run inside the server (sign-in, and the audit and
limits on every cell and file); ``browser_rules`` decides what the browser may read; ``ingress`` takes
code and lookup tables in after a data steward approves; ``rules`` is who may do what.
"""
