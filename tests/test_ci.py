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


def test_readme_main_command_installs_every_stage():
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.+?)\n```", readme, re.S).group(1).strip()
    assert "\n" not in first and 'pip install -e ".[all]"' in first and "pip install torch==2.13.0" in first


def test_github_workflow_runs_lint_format_tests_and_the_tiny_config():
    import yaml

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "main.yml").read_text())
    text = "\n".join(
        str(step.get("run", "")) for job in wf["jobs"].values() for step in job["steps"]
    ) + "\n" + str(wf.get("env", {}))
    for needed in ("snakemake --lint", "snakefmt --check", "python -m pytest", ".test/config/config.yaml"):
        assert needed in text, needed
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text


def test_tiny_config_is_the_catalog_file():
    import yaml
    from workflow_utils import TINY_CONFIG, TINY_CONFIG_PATH

    assert TINY_CONFIG_PATH == ROOT / ".test" / "config" / "config.yaml"
    assert TINY_CONFIG == yaml.safe_load(TINY_CONFIG_PATH.read_text())
