"""The README's two commands and .ci/run stay in step."""

import re

from workflow_utils import ROOT


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- test-command -->", 1)[1]
    cmd = re.search(r"```bash\n(.+?)\n```", block, re.S).group(1).strip()
    assert "pytest" in cmd and "pip install torch==2.13.0" in cmd
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci


def test_readme_main_command_runs_snakemake():
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.+?)\n```", readme, re.S).group(1)
    assert first.strip().endswith("snakemake --cores all")
