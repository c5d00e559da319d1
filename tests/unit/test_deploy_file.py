"""The deployments file (phm deploy), the run lock and the executor settings: errors name the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.config import load_config
from flows.deployments import (
    DEFAULT_CRON,
    DEFAULT_TIMEZONE,
    icb_config,
    read_deployments,
    site_warnings,
)
from flows.prefect_api import shown_url
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


@pytest.mark.slow  # a subprocess that imports Prefect
def test_phm_deploy_with_no_server_at_the_url_names_the_url_not_an_internal_error(tmp_path):
    from tests.servers import free_port

    path = write(tmp_path, '[[deployment]]\nicb = "QXX"\nextract = "/e"\nout = "/o"\n')
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"),
           "PREFECT_API_URL": f"http://operator:hunter2@127.0.0.1:{free_port()}/api"}
    done = subprocess.run([sys.executable, "-m", "cli", "deploy", "--file", str(path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "no Prefect server answers there" in done.stderr and "internal error" not in done.stderr
    assert "hunter2" not in done.stderr and "operator" not in done.stderr  # credentials in the URL are never shown
    env["PREFECT_API_URL"] = "localhost:4200/api"  # no scheme: httpx's "unsupported protocol" before
    done = subprocess.run([sys.executable, "-m", "cli", "deploy", "--file", str(path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "PREFECT_API_URL=localhost:4200/api: not an http:// or https:// URL" in done.stderr


def test_a_url_is_shown_without_its_credentials():
    assert shown_url("http://127.0.0.1:4200/api") == "http://127.0.0.1:4200/api"
    assert shown_url("https://u:p@prefect.ics.example:8443/api") == "https://prefect.ics.example:8443/api"
    assert shown_url("http://u@[::1]:4200/api") == "http://[::1]:4200/api"


def deployment_with_config(tmp_path, config_text: str | None, icb: str = "QXX") -> Path:
    config = tmp_path / "QXX.toml"
    if config_text is not None:
        config.write_text(config_text)
    return write(tmp_path, f'[[deployment]]\nicb = "{icb}"\nextract = "/e"\nout = "/o"\nconfig = "{config}"\n')


@pytest.mark.parametrize(("config_text", "message"), [
    (None, r"deployment\[0\]\.config: .*QXX\.toml: no such file"),
    ('[lists]\ncapacity_per_practise = 100\n', r"deployment\[0\]\.config: .*QXX\.toml: lists\.capacity_per_practise: "
                                                 "unknown key"),
    ('[run]\nmax_extract_age_days = "45"\n', r"deployment\[0\]\.config: .*QXX\.toml: run\.max_extract_age_days: must be"),
    ('[run\n', r"deployment\[0\]\.config: .*QXX\.toml: not valid TOML"),
    ('[run]\nicb = "QYY"\n', r"deployment\[0\]\.config: .*QXX\.toml: \[run\] icb is 'QYY', but this deployment is "
                             "for ICB 'QXX'"),
])
def test_phm_deploy_reads_each_icb_configuration_now_not_at_its_first_scheduled_run(tmp_path, config_text, message):
    """A typo in an ICB's run configuration stops phm deploy, naming the deployment, the file and
    the key: registered as it was, the first scheduled run would fail with it, a week later."""
    with pytest.raises(ConfigError, match=message):
        read_deployments(deployment_with_config(tmp_path, config_text))


def test_a_scheduled_run_reads_its_configuration_with_the_same_checks_naming_the_parameter(tmp_path):
    """The file may change after phm deploy: the run checks it again (flows/deployments.py,
    scheduled_run), naming the deployment's parameter rather than a --config option it never had."""
    where = "deployment parameter 'config'"
    with pytest.raises(ConfigError, match=rf"^{where}: .*gone\.toml: no such file"):
        icb_config(str(tmp_path / "gone.toml"), "QXX", where)
    (tmp_path / "QYY.toml").write_text('[run]\nicb = "QYY"\n')
    with pytest.raises(ConfigError, match=rf"^{where}: .*QYY\.toml: \[run\] icb is 'QYY', but this deployment is for "
                                          "ICB 'QXX'"):
        icb_config(str(tmp_path / "QYY.toml"), "QXX", where)
    assert icb_config(str(tmp_path / "QYY.toml"), "QYY", where).run.icb == "QYY"
    assert icb_config(None, "QXX", where).run.icb is None


def test_a_good_icb_configuration_is_accepted(tmp_path):
    _, specs = read_deployments(deployment_with_config(tmp_path, '[run]\nicb = "QXX"\n[lists]\ncapacity_per_practice = 90\n'))
    assert specs[0].config == str(tmp_path / "QXX.toml")


@pytest.mark.parametrize("name", ["QXX/weekly", "QXX & QYY", "100%"])
def test_a_deployment_name_prefect_would_refuse_is_refused_naming_the_key(tmp_path, name):
    with pytest.raises(ConfigError, match=r"deployment\[0\]\.name: a deployment's name cannot hold"):
        read_deployments(write(tmp_path, f'[[deployment]]\nicb = "QXX"\nname = "{name}"\nextract = "/e"\nout = "/o"\n'))


def test_phm_deploy_warns_of_an_extract_folder_not_there_and_an_output_folder_it_cannot_write(tmp_path):
    (tmp_path / "extract").mkdir()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    text = (f'[[deployment]]\nicb = "QXX"\nextract = "{tmp_path / "extract"}"\nout = "{tmp_path / "out" / "QXX"}"\n'
            f'[[deployment]]\nicb = "QYY"\nextract = "{tmp_path / "extractt"}"\nout = "{locked / "QYY"}"\n')
    _, specs = read_deployments(write(tmp_path, text))  # warnings, not errors: either may be set right in time
    warnings = site_warnings(specs)
    assert all(w.startswith("phm-scheduled-run/phm-QYY: ") for w in warnings), warnings  # QXX's are fine
    assert f"extract {tmp_path / 'extractt'} is not a folder on this machine (yet)" in warnings[0]
    if not os.access(locked, os.W_OK):  # (root writes anywhere)
        assert f"out {locked / 'QYY'}: {locked} is not a folder this user can write to" in warnings[1]


def test_phm_deploy_says_when_a_configurations_paths_are_not_the_ones_used(tmp_path):
    """The deployment's extract and out win, as --extract and --out do in phm run: a [run] extract
    in the ICB's configuration that differs is named, or editing it would seem to move the runs."""
    (tmp_path / "extract").mkdir()
    config = tmp_path / "QXX.toml"
    config.write_text(f'[run]\nextract = "/data/extracts/QXX/old"\nout = "{tmp_path / "out"}"\n')
    text = (f'[[deployment]]\nicb = "QXX"\nextract = "{tmp_path / "extract"}"\nout = "{tmp_path / "out"}"\n'
            f'config = "{config}"\n')
    _, specs = read_deployments(write(tmp_path, text))
    assert site_warnings(specs) == [f"phm-scheduled-run/phm-QXX: {config}: [run] extract = '/data/extracts/QXX/old' "
                                    f"is not used: the deployment's extract ({tmp_path / 'extract'}) is"]


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
