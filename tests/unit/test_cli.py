"""The command line as a user meets it: help everywhere, one-line errors, documented exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from cli.main import build_parser, main
from tests.extracts import write_extract

COMMANDS = ["synth", "ingest", "features", "train", "score", "audit", "review", "run", "deploy", "demo", "calc", "contract", "codelists"]


def phm(*args, timeout=300, prefect_api: str | None = None):
    """``phm`` in a subprocess; with ``prefect_api``, its flows use that Prefect server (the
    session's, tests/conftest.py) rather than starting a temporary one (about 12 s)."""
    exe = shutil.which("phm")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "cli", *args]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out
    assert "Exit codes" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: phm " + command in capsys.readouterr().out


def test_parser_has_no_command_left_out():
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(subparsers.choices) == sorted(COMMANDS)


def test_bad_option_value_is_one_line_with_exit_code_2(tmp_path):
    result = phm("synth", "--patients", "0", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["phm: error: --patients must be at least 1 (got 0)"]


def test_bad_knob_syntax_is_rejected_with_the_option_named(capsys, tmp_path):
    assert main(["synth", "--out", str(tmp_path / "x"), "--outcome-recording", "N:0.5"]) == 2
    assert "--outcome-recording takes GROUP=PROBABILITY" in capsys.readouterr().err


@pytest.mark.slow  # a subprocess running a Prefect flow
def test_extract_fault_through_the_flow_is_one_line_with_exit_code_3(tmp_path, prefect_test_server):
    extract = write_extract(tmp_path / "extract")
    (extract / "patients.csv").write_text("")
    result = phm("ingest", "--extract", str(extract), "--db", str(tmp_path / "phm.duckdb"), "--no-docs",
                 prefect_api=prefect_test_server)
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"phm: error: file {extract / 'patients.csv'}: is empty (0 bytes)"]
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # subprocesses, one running a Prefect flow
def test_synth_then_ingest_from_the_command_line(tmp_path, prefect_test_server):
    out = tmp_path / "extract"
    result = phm("synth", "--patients", "1500", "--seed", "3", "--pcns", "2", "--out", str(out), "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert "clinical_events" in result.stdout
    db = tmp_path / "phm.duckdb"
    result = phm("ingest", "--extract", str(out), "--db", str(db), prefect_api=prefect_test_server)
    assert result.returncode == 0, result.stderr
    assert "rows read = rows loaded + rows quarantined" in result.stdout
    assert (tmp_path / "phm.ingest.json").is_file()
    assert (tmp_path / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()
    result = phm("features", "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert "patients registered and alive at the index date" in result.stdout
    assert "1-7 suppressed" in result.stdout
    result = phm("features", "--db", str(db), "--index-date", "2030-01-01")
    assert result.returncode == 2
    assert "is after the extract date" in result.stderr
