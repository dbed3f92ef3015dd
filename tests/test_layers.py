"""Data flows one way (DESIGN.md): tasks -> sampling -> grpo -> analysis -> store -> plots.  Every import in
the package (module level and inside functions) goes to the same layer or a lower one, and no two modules
import each other, directly or through others."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "cancel_cli"

# module (dotted, without the package) -> layer; a package prefix covers its submodules
LAYERS = [
    ("", "errors", "console", "summary", "atomic"),  # base: used everywhere, imports nothing above
    ("tasks",),
    ("config", "policy", "sampling", "continuation", "vllm_engine", "evaluation"),  # models and sampling
    ("grpo", "rollout", "toy_model", "toy_fork", "verl_ext.checkpoints"),  # the rollout batch, the GRPO update, the toys (checkpoints: path logic, no verl import)
    ("analysis",),
    ("store", "runguard", "scope"),  # the results store, its run locks / signal handling, scoped views
    ("plots",),
    ("validate", "report", "report_claims", "report_section", "report_stats", "report_header", "report_train", "reproduce", "cli", "__main__", "verl_ext"),  # the application and the verl integration
]


def layer_of(module: str) -> int:
    best = None
    for rank, names in enumerate(LAYERS):
        for n in names:
            if module == n or (n and module.startswith(n + ".")):
                if best is None or len(n) > best[1]:
                    best = (rank, len(n))
    assert best is not None, f"module {module} is in no layer: add it to LAYERS"
    return best[0]


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Package-internal modules imported anywhere in ``path`` (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name.removeprefix("cancel_cli").lstrip(".") for a in node.names
                       if a.name.split(".")[0] == "cancel_cli"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "cancel_cli":
                mod = node.module.removeprefix("cancel_cli").lstrip(".")
            else:
                continue
            targets = [f"{mod}.{a.name}".strip(".") for a in node.names]  # an imported name may be a submodule
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t in known and t != module:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def test_every_module_is_in_a_layer():
    for m in modules():
        layer_of(m)


def test_no_upward_import():
    bad = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
           for m, deps in graph().items() for d in deps if layer_of(d) > layer_of(m)]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in sorted(g[m]):
            if d == "" or m.startswith(d + ".") or m == "":  # a package's __init__ is imported by its submodules
                continue
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])


def test_the_checker_sees_lazy_and_relative_imports():
    """Guard against a walker that reads nothing: known edges of the package must be found."""
    g = graph()
    assert "grpo.probe" in g["grpo.trainer"]  # relative, module level
    assert "verl_ext.launcher" in g["cli"]  # inside a function
    assert "tasks" in g["tasks.arithmetic"]  # `from . import Problem`


def test_eq9_contribution_is_one_function_in_kernel():
    """Coupling (Fig. 2) and masking (Table 1, Fig. 3) form A_k <h_j,h_k> phi_jk through kernel.contribution
    only: they hold that very function, and no other module writes the product inline."""
    import re

    import torch

    from cancel_cli.analysis import coupling, kernel, masked_update

    assert coupling.contribution is kernel.contribution and masked_update.contribution is kernel.contribution
    hh, phi, A = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5, 3.0]]), torch.tensor([[1.0, -2.0]])
    assert torch.allclose(kernel.contribution(hh, phi, A, temperature=2.0), torch.tensor([[0.25, 1.5]]))  # / T^2
    inline = re.compile(r"\bhh\b[^\n#]*\*[^\n#]*\bphi\b|\bphi\b[^\n#]*\*[^\n#]*\bhh\b")
    for path in PKG.rglob("*.py"):
        if path.name != "kernel.py":
            body = "\n".join(line for line in path.read_text().splitlines() if "contribution(" not in line)
            assert not inline.search(body), f"{path}: Eq. 9 written inline instead of kernel.contribution"
