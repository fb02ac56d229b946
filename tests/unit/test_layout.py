"""The package's layout as README's "How the code is laid out" describes it: the import contracts in
pyproject.toml hold and can fail, every module names its concern, and no module outgrows one concern."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "operator" / "paiflow_operator"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(tmp_path: Path, package: Path) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    # The copy comes first on the path, ahead of the editable install of the real package.
    env = {**os.environ, "PYTHONPATH": str(package.parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_contracts_hold_and_a_pure_core_importing_the_kube_adapter_breaks_them(tmp_path: Path) -> None:
    copy = tmp_path / "src" / "paiflow_operator"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    kept = _lint_imports(tmp_path, copy)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "0 broken" in kept.stdout
    core = copy / "conditions.py"
    core.write_text(core.read_text(encoding="utf-8") + "\nfrom paiflow_operator.kube import KubeError  # noqa\n")
    broken = _lint_imports(tmp_path, copy)
    assert broken.returncode != 0
    assert "Pure cores do no I/O BROKEN" in " ".join(broken.stdout.split())
    assert "paiflow_operator.conditions is not allowed to import paiflow_operator.kube" in " ".join(
        broken.stdout.split()
    )


def test_a_cycle_between_two_rooms_breaks_the_contracts(tmp_path: Path) -> None:
    copy = tmp_path / "src" / "paiflow_operator"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    due = copy / "runs" / "due.py"
    # due.py is imported by sync.py; sync importing it back is the kind of cycle the split removed.
    due.write_text(due.read_text(encoding="utf-8") + "\nfrom paiflow_operator.runs import sync  # noqa\n")
    broken = _lint_imports(tmp_path, copy)
    assert broken.returncode != 0
    assert "No cycles between the modules of any package BROKEN" in " ".join(broken.stdout.split())


def test_every_module_names_its_one_concern_in_the_first_line_of_its_docstring() -> None:
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if not source.strip():
            continue  # an empty __init__.py
        docstring = ast.get_docstring(ast.parse(source))
        if not docstring or not docstring.splitlines()[0].strip():
            missing.append(str(path.relative_to(PACKAGE)))
    assert missing == []


def test_no_module_but_the_pai_client_is_longer_than_about_500_lines() -> None:
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    sizes.pop("pai/client.py")  # one concern (the wire protocol), split by concern, not by size
    assert max(sizes.values()) <= 520, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
