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
    assert install.endswith("pip install -e . && privbench matrix --leaderboard site")
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines


def test_every_stored_metric_name_is_documented(behaviour_run):
    documented = (ROOT / "README.md").read_text()
    names = {m.name for cell in behaviour_run[0].cells() for m in cell.metrics}
    assert names and all(f"`{name}`" in documented or name in documented for name in names)


def test_every_metric_a_builtin_plugin_emits_is_documented():
    """Static check over the sources: each quoted metric name in plugins/ and privbench/."""
    documented = (ROOT / "README.md").read_text()
    sources = [*(ROOT / "plugins").glob("*.py"), *(ROOT / "privbench").glob("*.py")]
    pattern = r'"((?:defense|attack|utility|cost|privacy)\.[a-z_]+)"'
    names = {name for path in sources for name in re.findall(pattern, path.read_text())}
    assert {"defense.entropy", "attack.psnr", "privacy.score"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in documented)
    assert missing == []


def test_nothing_a_user_reads_points_outside_the_repository():
    """A user who cloned privbench has no ../shared: the README and the shipped reproduction configs
    say how to get the data with privbench alone."""
    texts = [ROOT / "README.md", *sorted((ROOT / "privbench" / "reproductions").glob("*.toml"))]
    for path in texts:
        text = path.read_text()
        assert "../shared" not in text and "/work/" not in text and "real_mnist.py" not in text, path.name
