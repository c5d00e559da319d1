"""The command line as a user meets it: help everywhere, one-line errors, documented exit codes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from cli.main import build_parser, main
from tests.extracts import write_extract

COMMANDS = ["synth", "ingest", "features", "train", "score", "audit", "review", "run", "deploy", "status", "demo", "practice-key",
            "reidentify", "rotate-key", "carry-over", "outcomes", "retention", "calc", "contract", "codelists"]


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
    from phm.exceptions import EXIT_CODES

    listed = {int(code) for code in re.findall(r"\b(\d+) [a-z]", " ".join(out.split("Exit codes:")[1].split()))}
    assert set(EXIT_CODES.values()) | {0, 70} <= listed  # every code a user can meet, 8-10 too


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


@pytest.mark.slow  # subprocesses that import Prefect
@pytest.mark.parametrize("command", ["run", "ingest"])
def test_a_prefect_api_url_with_no_server_is_named_before_any_work(tmp_path, monkeypatch, command):
    """PREFECT_API_URL left pointing at a server that is not running (or not there yet) was an
    internal error (exit 70: httpx's 'Failed to reach API') after the run had started."""
    from tests.servers import free_port

    extract = write_extract(tmp_path / "extract")
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", "k3y-for-the-cli-test-0123456789abcdefghij")
    url = f"http://127.0.0.1:{free_port()}/api"
    args = ["--out", str(tmp_path / "out")] if command == "run" else ["--db", str(tmp_path / "phm.duckdb")]
    result = phm(command, "--extract", str(extract), *args, prefect_api=url, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"phm: error: PREFECT_API_URL={url}: no Prefect server answers there" in result.stderr
    assert "unset PREFECT_API_URL to run without a Prefect server" in result.stderr
    assert "internal error" not in result.stderr and not (tmp_path / "out" / "phm.duckdb").exists()


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


# --- re-identification: the ICB writes a practice's key, the practice adds NHS numbers ----------

ICB_KEY = "a-cli-test-icb-key-that-is-long-enough-42"


def test_practice_key_writes_an_owner_only_file_never_prints_the_key_and_never_overwrites(tmp_path, monkeypatch,
                                                                                            capsys):
    from phm.pseudonymise import practice_key

    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", ICB_KEY)
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY_QYY", ICB_KEY[::-1])
    out = tmp_path / "101.key"
    assert main(["practice-key", "--practice", "101", "--out", str(out)]) == 0
    key = practice_key(ICB_KEY.encode(), "101").hex()
    assert out.read_text() == key + "\n" and oct(out.stat().st_mode & 0o777) == "0o600"
    printed = capsys.readouterr()
    assert key not in printed.out + printed.err and "secure channel" in printed.out
    assert main(["practice-key", "--practice", "101", "--out", str(out)]) == 2
    assert "exists: phm does not overwrite it" in capsys.readouterr().err and out.read_text() == key + "\n"
    # the per-ICB variable wins, as for phm run
    assert main(["practice-key", "--practice", "101", "--icb", "QYY", "--out", str(tmp_path / "qyy.key")]) == 0
    assert (tmp_path / "qyy.key").read_text() == practice_key(ICB_KEY[::-1].encode(), "101").hex() + "\n"
    assert main(["practice-key", "--practice", "../101", "--out", str(tmp_path / "x.key")]) == 2
    monkeypatch.delenv("PHM_PSEUDONYMISATION_KEY")
    assert main(["practice-key", "--practice", "202", "--out", str(tmp_path / "202.key")]) == 2
    assert "PHM_PSEUDONYMISATION_KEY is not set" in capsys.readouterr().err
    assert not (tmp_path / "202.key").exists() and not (tmp_path / "x.key").exists()


def practice_files(tmp_path, monkeypatch):
    """A PCN list made under ICB_KEY (practices 101 and 202), the keys of both practices, and
    practice 101's lookup (tests/spec/test_reidentify.py's patients)."""
    from tests.spec.test_reidentify import lookup, pcn_list

    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", ICB_KEY)
    pcn_list(ICB_KEY.encode()).write_csv(tmp_path / "U00001.csv")
    lookup((1, 2)).write_csv(tmp_path / "patients.csv")  # patient 3, listed, has left
    for practice in ("101", "202"):
        assert main(["practice-key", "--practice", practice, "--out", str(tmp_path / f"{practice}.key")]) == 0
    monkeypatch.delenv("PHM_PSEUDONYMISATION_KEY")  # the practice has no ICB key
    return tmp_path


def reidentify_args(folder, key="101.key", lookup="patients.csv", out="out"):
    return ["reidentify", "--list", str(folder / "U00001.csv"), "--practice", "101", "--key-file", str(folder / key),
            "--lookup", str(folder / lookup), "--out", str(folder / out)]


def test_reidentify_writes_the_practices_list_with_nhs_numbers_and_the_import_file(tmp_path, monkeypatch, capsys):
    from tests.spec.test_reidentify import NHS

    folder = practice_files(tmp_path, monkeypatch)
    capsys.readouterr()
    assert main(reidentify_args(folder)) == 0
    printed = capsys.readouterr()
    assert "practice 101: 3 patients on the list, 2 re-identified from the lookup, 1 not found in it" in printed.out
    assert "not in the lookup" in printed.out
    assert not any(n in printed.out + printed.err for n in NHS.values())
    listed = folder / "out" / "practice_101_list_with_nhs_numbers.csv"
    numbers = folder / "out" / "practice_101_nhs_numbers.txt"
    assert numbers.read_text() == f"{NHS[1]}\n{NHS[2]}\n"
    assert listed.read_text().splitlines()[0] == "nhs_number,pseudonym,practice_pseudo_id,reasons"
    assert {oct(p.stat().st_mode & 0o777) for p in (listed, numbers)} == {"0o600"}


def test_reidentify_names_the_re_ask_worklists_files_and_says_it_is_not_the_recall_group(tmp_path, monkeypatch,
                                                                                          capsys):
    import polars as pl

    from tests.spec.test_reidentify import NHS

    folder = practice_files(tmp_path, monkeypatch)
    pl.read_csv(folder / "U00001.csv", infer_schema=False).select(
        "pseudonym", "practice_pseudo_id", pl.lit("no ethnicity recorded").alias("reask_reason")).write_csv(
        folder / "U00001_ethnicity_reask.csv")
    assert main(reidentify_args(folder)) == 0
    capsys.readouterr()
    args = reidentify_args(folder)
    args[args.index("--list") + 1] = str(folder / "U00001_ethnicity_reask.csv")
    assert main(args) == 0  # into the same folder as the list's files
    printed = capsys.readouterr().out
    assert "patients on the ethnicity re-ask worklist" in printed and "not the targeting list's recall group" in printed
    numbers = folder / "out" / "practice_101_ethnicity_reask_nhs_numbers.txt"
    assert numbers.read_text() == f"{NHS[1]}\n{NHS[2]}\n"
    assert (folder / "out" / "practice_101_ethnicity_reask_with_nhs_numbers.csv").is_file()
    assert (folder / "out" / "practice_101_nhs_numbers.txt").read_text() == numbers.read_text()  # the list's, untouched


def test_reidentify_with_another_practices_key_writes_nothing_and_says_why(tmp_path, monkeypatch, capsys):
    folder = practice_files(tmp_path, monkeypatch)
    capsys.readouterr()
    assert main(reidentify_args(folder, key="202.key")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of practice 101's 3 listed patients matches the lookup under this key" in err[0]
    assert not (folder / "out").exists()


def test_reidentify_refuses_a_faulty_lookup_in_one_line_without_the_number(tmp_path, monkeypatch, capsys):
    folder = practice_files(tmp_path, monkeypatch)
    (folder / "bad.csv").write_text("patient_id,nhs_number\n1,9990000018\n2,9990000027\n")
    capsys.readouterr()
    assert main(reidentify_args(folder, lookup="bad.csv")) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"phm: error: file {folder / 'bad.csv'}, row 2, column 'nhs_number': not a valid NHS number "
                   "(10 digits whose last is the modulus-11 check digit); correct the export from the clinical system"]
    (folder / "short.key").write_text("ab" * 20 + "\n")
    (folder / "short.key").chmod(0o600)
    assert main(reidentify_args(folder, key="short.key")) == 3
    assert "holds 40 characters; a practice key is 64" in capsys.readouterr().err
    assert not (folder / "out").exists()


def test_ingest_with_no_prefect_api_runs_its_steps_without_a_temporary_server(tmp_path, monkeypatch, capsys):
    """With no Prefect API, phm ingest does not start Prefect's temporary server (seconds of
    start-up, longer than a 100k-patient ingest) and still records its run."""
    import duckdb
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        temporary_settings,
    )

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    extract, db = write_extract(tmp_path / "extract"), tmp_path / "phm.duckdb"
    # a flow with no API and no temporary server allowed fails ("No Prefect API URL provided")
    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_ENABLED: False}, restore_defaults={PREFECT_API_URL}):
        assert main(["ingest", "--extract", str(extract), "--db", str(db), "--no-docs"]) == 0
    assert "rows read = rows loaded + rows quarantined" in capsys.readouterr().out
    assert (tmp_path / "phm.ingest.json").is_file()
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from ingest.runs").fetchone()[0] == 1
        assert con.execute("select count(*) from main.patients").fetchone()[0] > 0


def test_prefects_settings_are_asked_whenever_a_source_of_them_exists(tmp_path, monkeypatch):
    """phm ingest skips importing Prefect's settings only when nothing could name an API."""
    from cli.main import _prefect_settings_elsewhere

    for name in ("PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    work = tmp_path / "work"
    work.mkdir()
    assert not _prefect_settings_elsewhere(work)
    (work / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert not _prefect_settings_elsewhere(work)
    (work / "pyproject.toml").write_text('[tool.prefect.api]\nurl = "http://127.0.0.1:4200/api"\n')
    assert _prefect_settings_elsewhere(work)
    (work / "pyproject.toml").unlink()
    for source in (".env", "prefect.toml"):
        (work / source).write_text("")
        assert _prefect_settings_elsewhere(work)
        (work / source).unlink()
    (tmp_path / "prefect").mkdir()
    (tmp_path / "prefect" / "profiles.toml").write_text('active = "local"\n')
    assert _prefect_settings_elsewhere(work)
    (tmp_path / "prefect" / "profiles.toml").unlink()
    monkeypatch.setenv("PREFECT_PROFILE", "local")
    assert _prefect_settings_elsewhere(work)
