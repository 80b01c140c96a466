"""The errors a user reads first: an InputError of a rule's script told in a short block at the top of
its log and on the console; a missing `input` file and a wrong config key stopped before any job, in
one or two lines of netpert's that name the key, what is wrong and where the value came from."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from workflow_utils import ROOT, SNAKEFILE, TINY_CONFIG, run_snakemake, write_tiny_config

from netpert.config import SCHEMA_PATH, check_input, config_sources, load_schema, source_of, validate_config
from netpert.errors import ConfigError, InputError
from netpert.workflow import script_logging

iocontainers = pytest.importorskip("snakemake.iocontainers")


# --------------------------------------------------------------------------------------------- rule scripts
def _fake_snakemake(tmp_path, rule="aracne_threshold", log=True, **wildcards):
    """What a `script:` sees as `snakemake`: the fields script_logging reads."""
    logs = [str(tmp_path / "logs" / f"{rule}.log")] if log else []
    if logs:
        Path(logs[0]).parent.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(rule=rule, log=logs, threads=1, wildcards=iocontainers.Wildcards(fromdict=wildcards))


@pytest.fixture
def hooks(monkeypatch):
    """sys.excepthook restored after the test; the hook in place before script_logging records calls."""
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: seen.append(value))
    return seen


def test_input_error_block_first_in_the_log_and_on_the_console(tmp_path, capsys, hooks):
    snakemake = _fake_snakemake(tmp_path, stratum="B_cells")
    log = snakemake.log[0]
    with pytest.raises(InputError) as info, script_logging(snakemake) as logger:
        logger.info("reading the stratum")
        print("a line the script printed")
        raise InputError("stratum 'B_cells' has 3 cells;\nset strata.min_cells lower")
    lines = Path(log).read_text().splitlines()
    block = [
        "netpert: input error in rule aracne_threshold (stratum=B_cells):",
        "  stratum 'B_cells' has 3 cells;",
        "  set strata.min_cells lower",
        f"  (traceback below in {log})",
    ]
    assert lines[:4] == block, lines[:6]
    rest = "\n".join(lines[4:])
    # below the block: what the script logged, in order, then the traceback
    started, printed = rest.index("rule aracne_threshold started"), rest.index("a line the script printed")
    traceback_at = rest.index("Traceback (most recent call last)")
    assert started < printed < traceback_at
    assert "netpert.errors.InputError: stratum 'B_cells' has 3 cells;" in rest[traceback_at:]
    assert "netpert: input error" not in rest  # the block is told once
    assert not list(Path(log).parent.glob("*tmp*"))  # the rewrite left no file beside the log

    # the console (the script's stderr) gets the block at once; the script's prints stayed in the log
    err = capsys.readouterr().err
    assert err.splitlines() == block[:3] + [f"  (traceback in {log})"]
    # ... and Python prints no second traceback if the error ends the script; other errors it does
    sys.excepthook(InputError, info.value, info.value.__traceback__)
    other = RuntimeError("not an input error")
    sys.excepthook(RuntimeError, other, None)
    assert hooks == [other]


def test_input_error_without_wildcards_or_log(tmp_path, capsys, hooks):
    snakemake = _fake_snakemake(tmp_path, rule="viper", log=False)
    with pytest.raises(InputError), script_logging(snakemake):
        raise InputError("no regulon has 10 targets in the data")
    # no log file: stderr is the log, the block comes right after the lines logged before the error
    err = capsys.readouterr().err.splitlines()
    at = err.index("netpert: input error in rule viper:")
    assert err[at + 1 : at + 3] == ["  no regulon has 10 targets in the data", "  (traceback below)"]
    assert "rule viper started" in err[0] and err[at + 3].endswith("input error (told above):")
    assert err[at + 4].startswith("Traceback")


def test_other_failures_and_success_have_no_block(tmp_path, capsys, hooks):
    snakemake = _fake_snakemake(tmp_path, chunk="0")
    with pytest.raises(ZeroDivisionError), script_logging(snakemake):
        1 / 0  # noqa: B018
    text = Path(snakemake.log[0]).read_text()
    assert "netpert: input error" not in text and "failed:" in text and "ZeroDivisionError" in text
    assert text.splitlines()[0].endswith("rule aracne_threshold started (threads=1)")
    with script_logging(snakemake) as logger:
        logger.info("fine")
    text = Path(snakemake.log[0]).read_text()
    assert "netpert: input error" not in text and text.rstrip().endswith("rule aracne_threshold finished")
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------------- the input file
def test_check_input(tmp_path):
    check_input("embedded:pbmc68k_reduced")
    data = tmp_path / "cells.h5ad"
    data.write_bytes(b"")
    check_input(str(data))
    check_input("cells.h5ad", base=tmp_path)
    with pytest.raises(ConfigError) as info:
        check_input(str(tmp_path / "nope.h5ad"))
    assert str(info.value) == (
        f"config key `input`: file {tmp_path / 'nope.h5ad'} does not exist; give an .h5ad path or embedded:pbmc68k_reduced"
    )
    with pytest.raises(ConfigError, match=r"file data/x.h5ad \(looked for .*/data/x.h5ad\) does not exist"):
        check_input("data/x.h5ad", base=tmp_path)
    with pytest.raises(ConfigError, match="config key `input`: .* is not a file"):
        check_input(str(tmp_path))
    assert issubclass(ConfigError, InputError)


def _said(proc) -> list[str]:
    """The lines snakemake printed (stdout and stderr), blank lines left out."""
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def test_missing_input_file_stops_the_plan(tmp_path):
    missing = tmp_path / "data" / "cells.h5ad"
    proc = run_snakemake(tmp_path, write_tiny_config(tmp_path, input=str(missing)), ["-n"], check=False)
    assert proc.returncode != 0
    assert _said(proc) == [
        f"netpert: config key `input`: file {missing} does not exist; give an .h5ad path or embedded:pbmc68k_reduced"
    ]
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------------------------- config validation
def _error(config, sources=()) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA_PATH, sources)
    return str(info.value)


def test_misspelled_key_is_told_with_a_suggestion_and_its_source():
    bad = {"aracne": {"bootstrap": 3}}
    file_ = ("config file /x/my.yaml", {"aracne": {"bootstrap": 3}})
    assert _error(copy.deepcopy(bad), [file_]) == (
        "Error validating config file /x/my.yaml, key `aracne.bootstrap`:\n"
        "  unknown key ('bootstrap' was unexpected); did you mean 'bootstraps'?"
    )
    cli = ("--config", {"aracne": {"bootstrap": "3"}})
    assert _error(copy.deepcopy(bad), [file_, cli]).startswith("Error validating --config, key `aracne.bootstrap`:")
    # a key no source holds (a default gone wrong): "the config"
    assert _error({"viper": {"signatur": "scale"}}).startswith("Error validating the config, key `viper.signatur`:\n")
    # no close match: the keys allowed there
    message = _error({"report": {"zzz": 1}})
    assert "did you mean" not in message and "allowed here: formats, umap, wandb, wandb_mode, wandb_project" in message
    # top level, and more than one problem
    message = _error({"aracn": {}, "isp": {"device": "gpu"}})
    assert message.splitlines() == [
        "Error validating the config, key `aracn`:",
        "  unknown key ('aracn' was unexpected); did you mean 'aracne'? (and 1 more problem)",
    ]


def test_wrong_type_or_value_in_two_lines():
    assert _error({"strata": {"min_cells": "many"}}).splitlines() == [
        "Error validating the config, key `strata.min_cells`:",
        "  'many' is not of type 'integer'",
    ]
    lines = _error({"isp": {"methods": ["baseline", "warp-drive"]}}).splitlines()
    assert lines[0] == "Error validating the config, key `isp.methods[1]`:" and len(lines) == 2
    assert lines[1].startswith("  'warp-drive' is not one of ['baseline'")


def test_source_of_follows_precedence():
    sources = [("config file /a.yaml", {"aracne": {"fdr": 0.1}, "isp": {"methods": ["x"]}}), ("--config", {"aracne": {"fdr": "0.2"}})]
    assert source_of(["aracne", "fdr"], sources) == "--config"
    assert source_of(["isp", "methods", 0], sources) == "config file /a.yaml"
    assert source_of(["viper", "mvws"], sources) is None


def test_config_sources_reads_the_files(tmp_path):
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("aracne: {bootstraps: 5}\n")
    two.write_text("isp: {seed: 1}\n")
    sources = config_sources([one, two, tmp_path / "absent.yaml"], {"viper": {"mvws": "2"}})
    assert sources == [
        (f"config file {one}", {"aracne": {"bootstraps": 5}}),
        (f"config file {two}", {"isp": {"seed": 1}}),
        ("--config", {"viper": {"mvws": "2"}}),
    ]
    assert config_sources([]) == []
    # the Snakefile's configfile: (not given on the command line) is merged first, --configfile after
    assert [label for label, _ in config_sources([one, two], given=[one])] == [f"config file {two}", f"config file {one}"]


@pytest.mark.parametrize(
    "given",
    [
        {},
        yaml.safe_load((ROOT / "config" / "config.yaml").read_text()),
        TINY_CONFIG,
        {"strata": {"metacells": {"enabled": True}}, "isp": {"targets": {"genes": ["CD3E"]}, "onnx": {}}},
    ],
    ids=["empty", "default", "tiny", "partial"],
)
def test_defaults_filled_as_snakemakes_validate(given):
    from snakemake.utils import validate

    ours, theirs = copy.deepcopy(given), copy.deepcopy(given)
    assert validate_config(ours, SCHEMA_PATH) is ours
    validate(theirs, str(SCHEMA_PATH))
    assert ours == theirs
    assert ours["isp"]["batch_size"]["tensorrt"] == 64 and ours["strata"]["metacells"]["n_pcs"] == 30
    # the schema's default objects are copied, not shared between configs
    schema = load_schema()
    a, b = validate_config({}, schema), validate_config({}, schema)
    a["regulators"]["lists"].append("sig")
    assert b["regulators"]["lists"] == ["tfs", "cotfs"]


# --------------------------------------------------------------------------------------------- through snakemake
@pytest.mark.workflow
def test_misspelled_key_in_a_config_file_through_snakemake(tmp_path):
    config = write_tiny_config(tmp_path, aracne={"bootstrap": 3})
    proc = run_snakemake(tmp_path, config, ["-n"], check=False)
    assert proc.returncode != 0
    assert _said(proc) == [
        f"netpert: Error validating config file {config}, key `aracne.bootstrap`:",
        "  unknown key ('bootstrap' was unexpected); did you mean 'bootstraps'?",
    ]


@pytest.mark.workflow
def test_misspelled_key_and_wrong_type_on_the_command_line(tmp_path):
    config = write_tiny_config(tmp_path)
    proc = run_snakemake(tmp_path, config, ["-n", "--config", "aracne={bootstrap: 3}"], check=False)
    assert proc.returncode != 0
    assert _said(proc) == [
        "netpert: Error validating --config, key `aracne.bootstrap`:",
        "  unknown key ('bootstrap' was unexpected); did you mean 'bootstraps'?",
    ]
    proc = run_snakemake(tmp_path, config, ["-n", "--config", "strata={min_cells: many}"], check=False)
    assert proc.returncode != 0
    assert _said(proc) == ["netpert: Error validating --config, key `strata.min_cells`:", "  'many' is not of type 'integer'"]
    # a valid --config beside the config file: the file's misspelled key is still the file's
    bad = write_tiny_config(tmp_path / "bad", strata={"min_cell": 30})
    proc = run_snakemake(tmp_path, bad, ["-n", "--config", "aracne={bootstraps: 3}"], check=False)
    assert _said(proc)[0] == f"netpert: Error validating config file {bad}, key `strata.min_cell`:"
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_misspelled_key_in_the_workflows_own_config_file(tmp_path):
    # no --configfile: the Snakefile's `configfile: "config/config.yaml"` (in the working directory)
    own = tmp_path / "config" / "config.yaml"
    write_tiny_config(own.parent, viper={"top": 2}).rename(own)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(tmp_path), "--cores", "1", "-n"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"), timeout=600)
    assert proc.returncode != 0
    assert _said(proc) == [
        f"netpert: Error validating config file {own}, key `viper.top`:",
        "  unknown key ('top' was unexpected); did you mean 'top_k'?",
    ]
