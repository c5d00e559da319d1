"""The deployments file (phm deploy), the run lock and the executor settings: errors name the key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flows.config import load_config
from flows.deployments import DEFAULT_CRON, DEFAULT_TIMEZONE, read_deployments
from flows.runlock import run_lock
from phm.exceptions import ConfigError, DatabaseError


def write(tmp_path, text: str):
    path = tmp_path / "deployments.toml"
    path.write_text(text)
    return path


def test_a_deployment_needs_only_icb_extract_and_out(tmp_path):
    pool, specs = read_deployments(write(tmp_path, '[[deployment]]\nicb = "QXX"\nextract = "/e"\nout = "/o"\n'))
    assert pool == "phm"
    assert specs[0].cron == DEFAULT_CRON and specs[0].timezone == DEFAULT_TIMEZONE == "Europe/London"
    assert specs[0].deployment_name == "phm-QXX"
    assert specs[0].parameters == {"icb": "QXX", "extract": "/e", "out": "/o", "config": None}


@pytest.mark.parametrize(("text", "message"), [
    ('[[deployment]]\nicb = "QXX"\nextract = "/e"\n', r"deployment\[0\]\.out: required"),
    ('[[deployment]]\nicb = "QXX"\nextract = "/e"\nout = "/o"\ncron = "every monday"\n',
     r"deployment\[0\]\.cron: not a cron expression"),
    ('[[deployment]]\nicb = "QXX"\nextract = "/e"\nout = "/o"\ntimezone = "Mars/Olympus"\n',
     r"deployment\[0\]\.timezone: unknown time zone"),
    ('[[deployment]]\nicb = "QXX"\nextract = "/e"\nout = "/o"\nschedule = "x"\n', r"deployment\[0\]\.schedule: unknown key"),
    ('[[deployment]]\nicb = 7\nextract = "/e"\nout = "/o"\n', r"deployment\[0\]\.icb: must be text"),
    ('work_pool = "p"\n', "no \\[\\[deployment\\]\\] tables"),
    ('pool = "p"\n', "unknown key 'pool'"),
    ('[[deployment]]\nicb = "QXX"\nextract = "/e"\nout = "/o"\n[[deployment]]\nicb = "QYY"\nextract = "/f"\nout = "/o"\n',
     "two deployments write to /o"),
    ('[[deployment]]\nicb = "QXX"\nextract = "/e"\nout = "/o"\n[[deployment]]\nicb = "QXX"\nextract = "/f"\nout = "/p"\n',
     "name 'phm-QXX' used twice"),
    ("[[deployment]\n", "not valid TOML"),
])
def test_a_bad_deployments_file_is_refused_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        read_deployments(write(tmp_path, text))


@pytest.mark.slow  # a subprocess that imports Prefect
def test_phm_deploy_without_a_server_says_how_to_start_one(tmp_path):
    path = write(tmp_path, '[[deployment]]\nicb = "QXX"\nextract = "/e"\nout = "/o"\n')
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    done = subprocess.run([sys.executable, "-m", "cli", "deploy", "--file", str(path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "PREFECT_API_URL is not set" in done.stderr


def test_a_second_run_into_the_same_folder_stops_at_once(tmp_path):
    with run_lock(tmp_path / "out"):
        with pytest.raises(DatabaseError, match="another phm run .* is using this output folder"):
            with run_lock(tmp_path / "out"):
                pass
    with run_lock(tmp_path / "out"):  # released at the end of the first
        pass


@pytest.mark.parametrize(("text", "message"), [
    ('[run]\nexecutor = "spark"\n', "run.executor: one of local, dask"),
    ('[run]\ndask_address = "10.0.0.5:8786"\n', "run.dask_address: a Dask scheduler address"),
    ('[run]\ndask_workers = 0\n', "run.dask_workers: between 1 and 256"),
    ('[run]\ndask_workers = "two"\n', "run.dask_workers: must be an integer"),
    # values that look like SQL are refused where a value has a known shape, never passed on
    ('[run]\nicb = "QXX\' or 1=1 --"\n', "run.icb: an ICB code of 3 capital letters"),
    ('[audit]\nreference_group = "White; drop table main.patients"\n', "audit.reference_group: one of White"),
    ('[lists]\nplus_groups = ["Black\'); drop table lists.invitations; --"]\n', "lists.plus_groups: .* is not a group"),
    ('[run]\nout = "/data/phm\\u0000/x"\n', "run.out: not a usable path"),
])
def test_executor_settings_are_checked_naming_the_key(tmp_path, text, message):
    path = tmp_path / "phm.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_paths_outside_the_allowed_folders_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PHM_ALLOWED_ROOTS", str(tmp_path / "data"))
    path = tmp_path / "phm.toml"
    path.write_text(f'[run]\nextract = "{tmp_path / "data" / "extract"}"\nout = "/etc/phm-out"\n')
    with pytest.raises(ConfigError, match="run.out: /etc/phm-out is outside the allowed folders"):
        load_config(path)
    path.write_text(f'[run]\nextract = "{tmp_path / "data" / "x"}"\nout = "{tmp_path / "data" / "../data/out"}"\n')
    assert load_config(path).run.out == tmp_path / "data" / "../data/out"
    escape = write(tmp_path, f'[[deployment]]\nicb = "QXX"\nextract = "{tmp_path / "data" / ".." / "elsewhere"}"\n'
                             f'out = "{tmp_path / "data" / "out"}"\n')
    with pytest.raises(ConfigError, match=r"deployment\[0\]\.extract: .* is outside the allowed folders"):
        read_deployments(escape)


def test_a_deployment_icb_code_that_is_not_a_code_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"deployment\[0\]\.icb: an ICB code"):
        read_deployments(write(tmp_path, '[[deployment]]\nicb = "Q; drop"\nextract = "/e"\nout = "/o"\n'))


def test_no_sql_is_built_from_strings_outside_the_reviewed_places():
    """ruff's S608 (SQL built by formatting) over the library: values reach SQL only as bound
    parameters; the few reviewed exceptions (table names from the contract) carry a noqa."""
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "S608", "--output-format", "concise",
                           "phm", "models", "features", "flows"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert done.returncode == 0, done.stdout
