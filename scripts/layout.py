"""The package import graph, computed from the source (for tests/unit/test_layout.py and docs/architecture.md).

The layers follow the flow of data; a module may import its own layer or a lower one, never a higher
one.  ``flows`` orchestrates the stages and ``toisio.app`` wires everything, so they sit on top.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (package, what it is), lowest first: the foundation, then the stages in the order data flows through them
LAYERS = [
    ("toisio", "foundation: config, database, audit, keys, identity, authorisation, errors"),
    ("catalogue", "the registries, their variables and code systems"),
    ("permits", "applications, decisions, the frozen scope"),
    ("pseudonymise", "validate, minimise, pseudonymise, link, deliver"),
    ("secure_env.workspace", "per-permit JupyterLab, read-only data"),
    ("secure_env.airlock", "disclosure control, DP ledger, two-person release"),
    ("secure_env.analyst", "kernel-side helpers (never the database)"),
    ("flows", "the stage-to-stage sequences (Prefect)"),
    ("toisio.app", "composition root: the CLI, the API, the migrations' model list"),
]
PACKAGES = ("toisio", "catalogue", "permits", "pseudonymise", "secure_env", "flows")


def layer_of(module: str) -> str | None:
    """The layer (package) a dotted module belongs to: the longest layer name it starts with."""
    best = None
    for name, _ in LAYERS:
        if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best)):
            best = name
    return best


def _modules():
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            if "migrations" in f.parts and "versions" in f.parts:
                continue
            yield ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"), f


def imports(source: Path) -> list[set[str]]:
    """Every absolute import statement in a file, at any depth (imports inside functions count too), as the
    set of modules it names (``from secure_env.workspace import server`` names ``secure_env.workspace.server``)."""
    out = []
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            out += [{a.name} for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append({f"{node.module}.{a.name}" for a in node.names})
    return out


def graph() -> tuple[Counter, list[tuple[str, str]]]:
    """(import statements between layers, the imports that run up against the flow)."""
    rank = {name: i for i, (name, _) in enumerate(LAYERS)}
    edges: Counter = Counter()
    upward = []
    for module, path in _modules():
        src = layer_of(module)
        for statement in imports(path):
            for dst in {layer_of(t) for t in statement} - {None, src}:
                edges[(src, dst)] += 1
                if rank[dst] > rank[src]:
                    upward.append((module, sorted(t for t in statement if layer_of(t) == dst)[0]))
    return edges, sorted(set(upward))


def cycles(edges) -> list[list[str]]:
    """Strongly connected groups of more than one layer (import cycles between packages)."""
    nodes = {a for a, _ in edges} | {b for _, b in edges}
    succ = {n: {b for a, b in edges if a == n} for n in nodes}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return out


def mermaid(edges) -> str:
    """The layer graph as a Mermaid flowchart (top: what wires; bottom: the foundation)."""
    ids = {name: name.replace(".", "_") for name, _ in LAYERS}
    lines = ["```mermaid", "flowchart BT"]
    for name, what in LAYERS:
        lines.append(f'    {ids[name]}["{name}<br/><small>{what}</small>"]')
    for (a, b), n in sorted(edges.items(), key=lambda e: ([x for x, _ in LAYERS].index(e[0][0]), e[0][1])):
        lines.append(f"    {ids[a]} -->|{n}| {ids[b]}")
    lines.append("```")
    return "\n".join(lines)


BEGIN, END = "<!-- layout:begin (make docs) -->", "<!-- layout:end -->"


def write_doc(doc: Path) -> None:
    """Put the current graph between the markers of docs/architecture.md."""
    text = doc.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    e, up = graph()
    body = (f"{mermaid(e)}\n\nImport statements between layers, computed from the source by `scripts/layout.py`: "
            f"{len(up)} running up against the flow, {len(cycles(e))} cycles.")
    doc.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-doc"]:
        write_doc(ROOT / "docs" / "architecture.md")
        print(ROOT / "docs" / "architecture.md")
    else:
        e, up = graph()
        print(mermaid(e))
        print(f"upward imports: {len(up)}; cycles: {len(cycles(e))}", file=sys.stderr)
        for u in up:
            print("  up:", *u, file=sys.stderr)
