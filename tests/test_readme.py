"""The README's set-up commands stay true: CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv .*)\n```", text)


def test_readme_has_the_install_and_test_commands_near_the_top():
    install, tests = readme_commands()[:2]
    assert install.endswith("pip install -e . && privbench matrix")
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines


def test_every_stored_metric_name_is_documented(behaviour_run):
    documented = (ROOT / "README.md").read_text()
    names = {m.name for cell in behaviour_run[0].cells() for m in cell.metrics}
    assert names and all(f"`{name}`" in documented or name in documented for name in names)
