"""Alerts (phm/alerts.py, flows/alerts.py): the configuration is checked with errors that name the
key and never show a URL; every message names the ICB, the condition and where to look, and is
built only from names, dates and shares, never a patient-level value. The real server and
webhook: tests/integration/test_alerts.py."""

from __future__ import annotations

import re

import polars as pl
import pytest

from flows.alerts import AlertDestination, check_url, destination_from, resolve_url, trigger_for
from flows.config import load_config
from flows.deployments import read_deployments_file
from phm.alerts import (
    CONDITIONS,
    DATA_QUALITY,
    GATE_FAIL,
    GATE_WARN,
    STALE_EXTRACT,
    AlertThresholds,
    custom_body,
    ethnicity_recorded_share,
    gate_alerts,
    quality_alert,
    quarantined_shares,
    run_failed_body,
    stale_alert,
    thresholds_from,
)
from phm.exceptions import ConfigError
from phm.ingest import TableReport

DEPLOYMENT = '[[deployment]]\nicb = "QXX"\nextract = "/e"\nout = "/o"\n'
SECRET = "https://hooks.slack.com/services/T000/B000/SECRETTOKEN"


def write(tmp_path, text: str):
    path = tmp_path / "deployments.toml"
    path.write_text(text)
    return path


def test_alerts_of_the_deployments_file_apply_to_every_icb_and_a_deployment_can_override(tmp_path):
    text = ('[alerts]\nkind = "slack"\nurl_env = "PHM_ALERTS_URL"\n' + DEPLOYMENT +
            '[[deployment]]\nicb = "QYY"\nextract = "/f"\nout = "/p"\n'
            '[deployment.alerts]\nurl_env = "PHM_ALERTS_URL_QYY"\nconditions = ["run_failed", "gate_fail"]\n')
    _, specs, alerts = read_deployments_file(write(tmp_path, text))
    assert alerts["QXX"][0] == AlertDestination("slack", "PHM_ALERTS_URL", None, CONDITIONS)
    assert alerts["QYY"][0] == AlertDestination("slack", "PHM_ALERTS_URL_QYY", None, ("run_failed", "gate_fail"))
    assert specs[1].alerts == alerts["QYY"][0] and "alerts" not in specs[1].parameters


def test_without_alerts_nothing_is_registered(tmp_path):
    _, specs, alerts = read_deployments_file(write(tmp_path, DEPLOYMENT))
    assert alerts == {} and specs[0].alerts is None


@pytest.mark.parametrize(("text", "message"), [
    ('[alerts]\nkind = "pager"\nurl_env = "X"\n', r"alerts\.kind: one of webhook, slack, teams"),
    ('[alerts]\nkind = "slack"\n', r"alerts\.url_env: required"),
    (f'[alerts]\nurl = "{SECRET}"\n', r"alerts\.url: unknown key .*a URL is a secret"),
    (f'[alerts]\nurl_env = "{SECRET}"\n', r"alerts\.url_env: the name of an environment variable"),
    ('[alerts]\nurl_env = "X"\nblock = "slack-webhook/ics"\n', r"alerts: give url_env or block, not both"),
    ('[alerts]\nblock = "ics phm"\n', r"alerts\.block: \"<block type slug>/<block name>\""),
    ('[alerts]\nurl_env = "X"\nconditions = ["run_failed", "sunspots"]\n', r"alerts\.conditions: unknown condition 'sunspots'"),
    ('[alerts]\nurl_env = "X"\nconditions = "run_failed"\n', r"alerts\.conditions: a list of conditions"),
    ('[alerts]\nurl_env = 3\n', r"alerts\.url_env: must be text"),
])
def test_a_bad_alerts_table_is_refused_naming_the_key_and_never_showing_a_url(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as error:
        read_deployments_file(write(tmp_path, text + DEPLOYMENT))
    assert "SECRETTOKEN" not in str(error.value)


def test_one_icb_has_one_set_of_alerts(tmp_path):
    text = (DEPLOYMENT + '[deployment.alerts]\nurl_env = "A"\n'
            '[[deployment]]\nname = "other"\nicb = "QXX"\nextract = "/f"\nout = "/p"\n[deployment.alerts]\nurl_env = "B"\n')
    with pytest.raises(ConfigError, match=r"deployment\[1\]\.alerts: ICB QXX's alerts differ"):
        read_deployments_file(write(tmp_path, text))


@pytest.mark.parametrize(("url", "kind", "ok"), [
    ("https://hooks.example.nhs.uk/phm", "webhook", True),
    ("http://127.0.0.1:9000/hook", "webhook", True),
    ("http://localhost/hook", "webhook", True),
    ("http://hooks.example.nhs.uk/phm", "webhook", False),  # plain http off this machine
    ("ftp://hooks.example.nhs.uk/phm", "webhook", False),
    ("not a url", "webhook", False),
    (SECRET, "slack", True),
    ("https://hooks.example.nhs.uk/services/T000/B000/SECRETTOKEN", "slack", False),
])
def test_a_webhook_url_is_checked_and_never_shown(url, kind, ok):
    if ok:
        check_url(url, kind, "alerts.url_env ($X)")
        return
    with pytest.raises(ConfigError, match=r"alerts\.url_env \(\$X\): not .*the value is not shown") as error:
        check_url(url, kind, "alerts.url_env ($X)")
    assert "SECRETTOKEN" not in str(error.value) and "example" not in str(error.value)


def test_the_url_comes_from_the_environment_named(monkeypatch):
    dest = AlertDestination("slack", "PHM_ALERTS_URL")
    with pytest.raises(ConfigError, match=r"alerts\.url_env: the environment variable PHM_ALERTS_URL is not set"):
        resolve_url(dest, "alerts", environ={})
    assert resolve_url(dest, "alerts", environ={"PHM_ALERTS_URL": SECRET + "\n"}) == SECRET


def test_a_url_the_notification_block_refuses_is_refused_without_showing_it():
    dest = AlertDestination("teams", "PHM_ALERTS_URL")
    with pytest.raises(ConfigError, match=r"alerts\.url_env \(\$PHM_ALERTS_URL\): not a URL Prefect's teams") as error:
        resolve_url(dest, "alerts", environ={"PHM_ALERTS_URL": "https://example.nhs.uk/SECRETTOKEN"})
    assert "SECRETTOKEN" not in str(error.value) and error.value.__cause__ is None


def test_data_quality_thresholds_are_run_configuration_with_defaults(tmp_path):
    assert load_config(None).alerts == AlertThresholds(0.80, 0.01)
    path = tmp_path / "phm.toml"
    path.write_text("[alerts]\nmin_ethnicity_recorded_share = 0.9\nmax_quarantined_share = 0\n")
    assert load_config(path).alerts == AlertThresholds(0.9, 0.0)
    for text, message in [("[alerts]\nmin_ethnicity_recorded_share = 90\n", r"alerts\.min_ethnicity_recorded_share: a share"),
                          ("[alerts]\nmax_quarantined_share = true\n", r"alerts\.max_quarantined_share: a share"),
                          ("[alerts]\nurl_env = \"X\"\n", r"alerts\.url_env: unknown key .*deployments file")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    with pytest.raises(ConfigError, match="default 0.8"):
        thresholds_from({"min_ethnicity_recorded_share": -1})


# -- the messages ------------------------------------------------------------------------------

# What a message may hold besides words: the ICB, the outcome, table and rule names, dates of the
# extract and of today, whole-percent shares, day counts, and paths. A patient's identifier, a
# date of birth or a measurement has no way in: the functions take none.
PATIENT_LIKE = re.compile(r"\b\d{10}\b|\b\d+\.\d+\b")  # an NHS-number-like run of digits, a decimal value


def _all_alerts():
    yield from gate_alerts("QXX", [("cvd", "FAIL"), ("hypertension", "FAIL"), ("t2d", "WARN")],
                           "/data/phm/QXX/audit/fairness_audit.html", "/data/phm/QXX/lists")
    yield stale_alert("QXX", "2026-03-31", 244, 45, "refuse", "/data/phm/QXX/lists")
    yield stale_alert("QXX", "2026-03-31", 244, 45, "mark", "/data/phm/QXX/lists")
    yield quality_alert("QXX", AlertThresholds(), 0.6234, {"clinical_events": (0.0312, "value out of range")},
                        "/data/phm/QXX/phm.duckdb")


def test_every_message_names_the_icb_the_condition_and_where_to_look():
    alerts = list(_all_alerts())
    assert [a.condition for a in alerts] == [GATE_FAIL, GATE_WARN, STALE_EXTRACT, STALE_EXTRACT, DATA_QUALITY]
    for alert in alerts:
        assert alert.message.startswith("ICB QXX: ") and "ICB QXX" in alert.subject
        assert alert.where in alert.message and alert.where.startswith("/data/phm/QXX/")
        assert not PATIENT_LIKE.search(alert.message), alert.message
        payload = alert.payload()
        assert payload["icb"] == "QXX" and payload["condition"] == alert.condition and payload["message"] == alert.message
    fail, warn, refused, marked, quality = alerts
    assert fail.subject == "phm-risk ICB QXX: fairness gate FAIL"
    assert "fairness gate FAIL for cvd, hypertension." in fail.message and "t2d" not in fail.message
    assert "No list was published" in fail.message
    assert warn.subject == "phm-risk ICB QXX: fairness gate WARN awaiting a reviewer's sign-off"
    assert "fairness gate WARN, not signed off by a named reviewer, for t2d." in warn.message
    assert "phm review" in warn.message
    assert "dated 2026-03-31, 244 days old; the limit is 45 days" in refused.message
    assert "refused before any work (exit code 10)" in refused.message
    assert "published marked STALE DATA" in marked.message
    assert "ethnicity recorded for 62% of patients, below 80%" in quality.message
    assert "3% of the clinical_events table's rows quarantined, above 1%" in quality.message
    assert quality.payload()["ethnicity_recorded_share"] == 0.62  # rounded: a share of a whole ICB


def test_no_quality_alert_within_the_thresholds():
    assert quality_alert("QXX", AlertThresholds(), 0.85, {"clinical_events": (0.004, "x")}, "/r") is None
    assert quality_alert("QXX", AlertThresholds(), None, {}, "/r") is None
    assert gate_alerts("QXX", [], "/r", "/l") == []


def test_quality_measures_are_those_of_the_audit_and_ingest():
    groups = pl.Series(["White", "Asian", "Not stated", "Not known", None])
    assert ethnicity_recorded_share(groups) == 0.4  # Z and 99 (and no code) are not recorded
    assert ethnicity_recorded_share(pl.Series([], dtype=pl.String)) is None
    tables = [TableReport("patients", "patients.csv", rows_read=100, rows_loaded=100),
              TableReport("clinical_events", "c.csv", rows_read=1000, rows_loaded=960, rows_quarantined=40,
                          quarantine_reasons={"date after the extract date": 25, "value out of range": 15},
                          rows_quarantined_with_parent=10)]
    # rows that only followed their quarantined patient count against the patients table, as ingest counts
    assert quarantined_shares(tables) == {"clinical_events": (0.03, "date after the extract date")}


def test_the_automation_templates_point_at_the_run_and_leave_the_error_text_out():
    body = run_failed_body("QXX", "http://127.0.0.1:4200")
    assert body.startswith("ICB QXX: a phm-risk run ended {{ event.resource['prefect.state-name'] }}")
    assert "http://127.0.0.1:4200/runs/flow-run/{{ flow_run.id }}" in body
    assert "state-message" not in body  # an unexpected error's text is not under phm's control
    assert custom_body("http://h") == "{{ event.payload.message }} Prefect run: http://h/runs/flow-run/{{ flow_run.id }}"


def test_each_icb_automation_matches_only_its_own_runs_and_events():
    failed = trigger_for("QXX", "run_failed")
    assert failed.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    related = [spec.root for spec in failed.match_related]
    assert {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.icb:QXX"} in related
    assert {"prefect.resource.role": "flow", "prefect.resource.name": ["phm-run", "phm-scheduled-run"]} in related
    stale = trigger_for("QXX", "stale_extract")
    assert stale.expect == {"phm.extract.stale"} and stale.match.root == {"prefect.resource.id": "phm.icb.QXX"}


def test_a_destination_table_alone_is_checked():
    assert destination_from({"block": "slack-webhook/ics-phm"}, "alerts") == \
        AlertDestination("webhook", None, "slack-webhook/ics-phm", CONDITIONS)
    over = destination_from({"block": "teams/x"}, "d.alerts", AlertDestination("slack", "X"))
    assert over.block == "teams/x" and over.url_env is None
