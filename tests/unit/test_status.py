"""``phm status`` over output folders (no Prefect): what an ICS unit's morning check reads.

Each folder is made with the run's own writers (flows/publish.py, flows/runrecord.py), so what
status reads is what a run leaves. The Prefect side (last and next run of each deployment) is
tested against a real server in tests/integration/test_scheduling.py.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from cli.main import main
from flows.publish import MANIFEST, mark_not_replaced
from flows.runrecord import write_record
from flows.status import folder_status


def published(out: Path, extract_date: str = "2026-11-30", **manifest) -> Path:
    """An output folder as a run that published leaves it: lists-<stamp>/ with its manifest, the
    relative `lists` link, last_run.json."""
    folder = out / "lists-20261201T060500Z"
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps({
        "published_at": "2026-12-01T06:05:00+00:00", "index_date": extract_date, "extract_date": extract_date,
        "gate": "PASS", "pcns": {"U10000": {}, "U10037": {}}, **manifest}))
    (out / "lists").symlink_to(folder.name)
    write_record(out, "d" * 64, "s" * 64, out / "lists")
    return out


TODAY = dt.date(2026, 12, 3)


def test_a_current_folder_is_ok_and_says_what_is_published(tmp_path):
    status = folder_status(published(tmp_path / "QXX"), today=TODAY)
    assert status.attention == []
    text = "\n".join(status.render())
    assert text.startswith(f"{tmp_path / 'QXX'}: ok")
    assert "lists: lists-20261201T060500Z, published 2026-12-01T06:05:00+00:00, index date 2026-11-30, 2 PCN(s)" in text
    assert "extract: dated 2026-11-30, 3 days old today (limit 45" in text
    assert "gate: PASS" in text and "last published run finished " in text


def test_a_refused_run_and_an_aging_extract_need_attention(tmp_path):
    out = published(tmp_path / "QXX", extract_date="2026-10-01")
    mark_not_replaced(out, "fairness gate refused", "t2d: FAIL, not signed off")  # as a refused run marks them
    status = folder_status(out, today=TODAY, max_age_days=45)
    assert any(a.startswith("NOT REPLACED: a run refused at ") and "(fairness gate refused)" in a
               and str(out / "lists" / "NOT_REPLACED.txt") in a for a in status.attention), status.attention
    assert any("extract is 63 days old: the next run on it is refused as stale (exit 10)" in a
               for a in status.attention), status.attention
    assert status.render()[0].endswith(": NEEDS ATTENTION")


def test_lists_published_marked_stale_need_attention(tmp_path):
    out = published(tmp_path / "QXX", extract_date="2026-03-31", stale={"extract_age_days": 200})
    assert folder_status(out, today=TODAY).attention == [
        "the published lists are marked STALE (their extract was over the age limit)"]


def test_a_folder_with_no_run_or_no_lists_yet(tmp_path):
    assert folder_status(tmp_path / "none", today=TODAY).attention == [
        f"no output folder {tmp_path / 'none'}: no run has written here yet"]
    (tmp_path / "empty").mkdir()
    status = folder_status(tmp_path / "empty", today=TODAY)
    assert status.lines == ["lists: none published yet"] and status.attention


@pytest.mark.parametrize("how", ["out", "file"])
def test_phm_status_prints_every_folder_and_how_many_need_attention(tmp_path, capsys, monkeypatch, how):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # folders only
    ok = published(tmp_path / "QAA", extract_date=dt.date.today().isoformat())
    if how == "out":
        argv = ["status", "--out", str(ok), str(tmp_path / "QBB")]
    else:
        (tmp_path / "deployments.toml").write_text(
            f'[[deployment]]\nicb = "QAA"\nextract = "{tmp_path}"\nout = "{ok}"\n'
            f'[[deployment]]\nicb = "QBB"\nextract = "{tmp_path}"\nout = "{tmp_path / "QBB"}"\n')
        argv = ["status", "--file", str(tmp_path / "deployments.toml")]
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # even under a test harness's server
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{ok}: ok" in out and f"{tmp_path / 'QBB'}: NEEDS ATTENTION" in out
    assert out.rstrip().endswith("2 output folder(s), 1 needing attention")
    if how == "file":
        assert "QAA " in out and "QBB " in out


def test_phm_status_needs_a_file_or_folders(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["status"])
    assert exit_.value.code == 2
    assert main(["status", "--file", str(tmp_path / "d.toml"), "--config", str(tmp_path / "c.toml")]) == 2
    assert "--config goes with --out" in capsys.readouterr().err
