"""The example notebooks run inside a workspace kernel (no network, read-only data) with nbclient,
on a real delivery from the pipeline; and their outputs are stripped in git."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import nbformat
import pytest
import yaml

from permits.scope import PermitScope
from pseudonymise.pipeline import run_extraction
from secure_env.workspace import provision as W
from secure_env.workspace import server as S
from tests.factories import make_case, make_service, make_staff, who

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
SCOPE = Path(__file__).resolve().parents[2] / "examples" / "scope-diabetes.yaml"


def test_there_are_example_notebooks_and_their_outputs_are_stripped():
    assert len(NOTEBOOKS) >= 3
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "toisio-offline", path
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not stripped"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, spark, extracts):
    tmp = tmp_path_factory.mktemp("nb")
    svc = make_service(tmp / "home")
    staff = make_staff(svc)
    permit = make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id
    scope = PermitScope.model_validate(yaml.safe_load(SCOPE.read_text()) | {"permit_id": permit})
    result = run_extraction(scope, extracts, tmp / "delivery", svc, spark=spark)
    W.create(svc, who(svc, "hanna"), permit, result.output_dir)
    return svc, permit


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_a_workspace_kernel(workspace, notebook):
    svc, permit = workspace
    root = W.paths(svc, permit).root
    nb = nbformat.read(root / "examples" / notebook.name, as_version=4)  # the copy the analyst starts from
    S.run_notebook(svc, permit, nb, cwd=root / "examples", timeout=300)
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "Traceback" not in text
    probe = nbformat.v4.new_code_cell("import socket\ntry:\n    socket.create_connection(('192.0.2.1', 9), 2)\n"
                                      "except OSError as e:\n    print('no network:', e.errno)")
    nb.cells.append(probe)
    S.run_notebook(svc, permit, nb, cwd=root / "examples", timeout=300)
    assert "no network: 101" in json.dumps(nb.cells[-1].outputs)


@pytest.mark.slow
@pytest.mark.integration
def test_a_histogram_drawn_in_the_sandbox_is_verified_by_the_airlock_on_the_host(workspace):
    """The figure is drawn in the sandboxed kernel and drawn again by the airlock on the host from the delivered
    data: the same bytes, so the figure itself is verified, not only its counts."""
    from secure_env.airlock import outputs as A

    svc, permit = workspace
    root = W.paths(svc, permit).root
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "toisio-offline", "language": "python",
                                                           "display_name": "Python"}})
    nb.cells = [nbformat.v4.new_code_cell(
        "import os\n"
        "from secure_env.analyst import ACRO\n"
        "acro = ACRO()\n"
        "purchases = acro.read('kela_purchases')\n"
        "acro.hist(purchases, 'ddd', bins=5, range=(0, 500),\n"
        "          filename=os.path.join(os.environ['TOISIO_SCRATCH'], 'ddd-hist.png'))\n"
        "print('drawn')")]
    S.run_notebook(svc, permit, nb, cwd=root / "scratch", timeout=300)
    assert "drawn" in json.dumps(nb.cells[0].outputs), nb.cells[0].outputs
    bob = who(svc, "bob")
    rid = A.create_request(svc, bob, permit)
    A.add_file(svc, bob, rid, root / "scratch" / "ddd-hist.png", {"description": "DDD per purchase",
                                                                  "method": "acro.hist, 5 bins over 0-500"})
    [f] = A.view(svc, who(svc, "oscar"), rid)["files"]
    assert f["check_report"]["verified"] is True, f["check_report"]
