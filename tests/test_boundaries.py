"""Package boundaries: public names are what __all__ says, and guardrails never imports clinagent."""

from __future__ import annotations

import ast
from pathlib import Path

import clinagent
import guardrails

ROOT = Path(__file__).resolve().parent.parent


def test_exported_members_exist_and_are_listed():
    for mod in (clinagent, guardrails):
        assert mod.__all__ == sorted(mod.__all__, key=str), f"{mod.__name__}.__all__ is not sorted"
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name} listed but missing"
        public = {n for n in vars(mod) if not n.startswith("_") and not isinstance(getattr(mod, n), type(ast))}
        assert public <= set(mod.__all__) | _submodules(mod), (
            f"unlisted public names in {mod.__name__}: {public - set(mod.__all__)}"
        )


def _submodules(mod) -> set[str]:
    return {p.stem for p in Path(mod.__file__).parent.glob("*.py")} | {"rules"}


def test_guardrails_never_imports_clinagent_model_or_network():
    forbidden = (
        "clinagent",
        "pydantic_ai",
        "httpx",
        "httpx2",
        "requests",
        "urllib.request",
        "socket",
        "openai",
        "anthropic",
    )
    for path in (ROOT / "guardrails").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                assert not any(n == f or n.startswith(f + ".") for f in forbidden), f"{path}: imports {n}"


def test_check_command_does_not_import_agent_or_web_stack(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, clinagent.cli, guardrails; "
        "bad=[m for m in sys.modules if m.split('.')[0] in ('pydantic_ai','fastapi','streamlit','uvicorn','openai','anthropic','sqlmodel')]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
