"""Exit codes that say what happened (issue 16): a full disk is a full disk, too little data is
not a configuration fault, and every command's files are owner-only."""

from __future__ import annotations

import errno

import numpy as np
import polars as pl
import pytest

from cli.main import main
from phm.exceptions import EXIT_CODES, DiskFull, ExtractError, TooLittleData


def test_a_full_disk_is_reported_as_one_with_the_path_and_its_own_exit_code(tmp_path, monkeypatch, capsys):
    source = tmp_path / "in.csv"
    source.write_text("sex,age\nF,50\n")

    def no_space(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pl.DataFrame, "write_csv", no_space)
    assert main(["calc", "qrisk3", "--input", str(source), "--output", str(tmp_path / "o.csv")]) == 9
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on the device writing " + str(tmp_path / "o.csv") in err


def test_a_full_disk_inside_a_library_error_is_found_whatever_wraps_it():
    import duckdb

    try:
        try:
            raise duckdb.IOException('IO Error: Could not write file "/data/phm/phm.duckdb.wal": '
                                     "No space left on device")
        except duckdb.Error:
            raise ExtractError("malformed Parquet: ...", file="patients.parquet") from None
    except ExtractError as wrapped:
        full = DiskFull.from_exception(wrapped)
    assert full is not None and "/data/phm/phm.duckdb.wal" in str(full) and full.exit_code == 9
    assert DiskFull.from_exception(ExtractError("malformed CSV", file="x.csv")) is None


def test_too_little_data_has_its_own_exit_code_not_a_configuration_fault():
    from models.train import practice_split, single_icb

    assert EXIT_CODES["TooLittleData"] == 8 and EXIT_CODES["ConfigError"] == 2
    with pytest.raises(TooLittleData, match="at least 2 practices"):
        practice_split(np.array([1, 1, 1]), 0.3, seed=1)
    with pytest.raises(TooLittleData, match="no registered patients"):
        single_icb(pl.DataFrame({"icb_code": []}, schema={"icb_code": pl.String}), None)


def test_a_headerless_scores_file_is_refused_without_echoing_its_first_row(tmp_path, capsys):
    """The first patient's values became column names, and the error listed them: an
    NHS-number-shaped value and a date of birth on the terminal."""
    table = tmp_path / "scores.csv"
    table.write_text("9434765919,1960-05-01,White,0.31,1\n9434765920,1971-02-01,Black,0.12,0\n")
    code = main(["audit", "--scores", str(table), "--group", "ethnicity", "--score", "risk",
                 "--outcome", "event", "--top-k", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "looks like data, not a header" in err
    assert "9434765919" not in err and "1960-05-01" not in err and "0.31" not in err


@pytest.mark.parametrize("name", ["ingest.duckdb", "staging.duckdb", "Marts.db", "main.duckdb"])
def test_a_database_named_like_a_schema_is_refused_before_any_work(tmp_path, capsys, name):
    """DuckDB names the database after its file: 'ingest.duckdb' made every ingest.<table>
    ambiguous (exit 70), and 'staging.duckdb' was blamed on the extract (exit 3)."""
    extract = tmp_path / "extract"
    extract.mkdir()
    assert main(["ingest", "--extract", str(extract), "--db", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert "also one of phm's schemas" in err and "extract" not in err.split("--db", 1)[0]
    assert not (tmp_path / name).exists()
    assert main(["features", "--db", str(tmp_path / name)]) == 2
