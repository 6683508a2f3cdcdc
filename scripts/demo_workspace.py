"""Demo stand-in for the analyst at the browser: run an example notebook in the permit's workspace.

It logs in to the running workspace server with the analyst's own token and runs the notebook cell by cell
over the kernel websocket, as JupyterLab does, so every cell is audited with the analyst's name; the notebook
is saved back with its outputs.  Usage: demo_workspace.py URL TOKEN_FILE ANALYST NOTEBOOK_PATH
"""

import json
import sys
from pathlib import Path

from secure_env.workspace.client import run_notebook

url, token_file, analyst, notebook = sys.argv[1:5]
token = json.loads(Path(token_file).read_text())[analyst]
results = run_notebook(url, token, notebook)
for i, cell in enumerate(results, 1):
    shown = cell.stdout.strip() or "".join(o.get("text/plain", "") for o in cell.outputs).strip()
    print(f"[{i}] {cell.status}" + (f": {cell.error}" if cell.error else ""))
    if shown:
        print("    " + shown.replace("\n", "\n    ")[:1500])
if any(c.status != "ok" for c in results):
    sys.exit(1)
