"""Spec tests for re-identification at the practice (phm/reidentify.py) on hand-made tables: the
round trip, what one practice's key cannot do, and every refusal (naming file, row and column,
never echoing an NHS number or a key)."""

from __future__ import annotations

import stat

import polars as pl
import pytest

from phm.exceptions import ConfigError, PracticeFileError
from phm.pseudonymise import practice_key, pseudonymise
from phm.reidentify import (
    check_practice_id,
    nhs_number_is_valid,
    read_list,
    read_lookup,
    read_practice_key,
    reidentify,
    write_outputs,
    write_practice_key,
)

ICB_KEY = b"an-icb-key-for-the-spec-tests-0123456789"
OTHER_ICB_KEY = b"another-icb-key-for-the-spec-tests-98765"
# patients 1-4 at practice 101, 5-6 at practice 202; NHS numbers from the 999 testing range
NHS = {1: "9990000018", 2: "9990000026", 3: "9990000034", 4: "9990000042", 5: "9990000050", 6: "9990000069"}
PRACTICE_OF = {1: 101, 2: 101, 3: 101, 4: 101, 5: 202, 6: 202}


def pcn_list(key: bytes = ICB_KEY, patients=(3, 1, 5, 2, 6)) -> pl.DataFrame:
    """A PCN list as published (text columns, as read from its CSV), in its order."""
    frame = pl.DataFrame({"patient_id": list(patients), "practice_pseudo_id": [PRACTICE_OF[p] for p in patients]})
    rows = frame.with_columns(pseudonymise(frame, key), pl.format("reason for {}", "patient_id").alias("reasons"))
    return rows.select("pseudonym", pl.col("practice_pseudo_id").cast(pl.String), "reasons")


def lookup(patients=(1, 2, 3, 4)) -> pl.DataFrame:
    return pl.DataFrame({"patient_id": [str(p) for p in patients], "nhs_number": [NHS[p] for p in patients]})


def test_the_check_digit_is_modulus_11():
    assert all(nhs_number_is_valid(n) for n in NHS.values())
    assert nhs_number_is_valid("9434765919")  # NHS Digital's worked example
    assert not nhs_number_is_valid("9434765918")  # one digit off
    assert not nhs_number_is_valid("9990000000")  # 999000000's check digit would be 10: no valid number
    for bad in ("943476591", "94347659190", "943476591X", "943 476 5919", ""):
        assert not nhs_number_is_valid(bad)


def test_the_practice_recovers_exactly_its_own_listed_patients_in_the_lists_order():
    own = reidentify(pcn_list(), "101", practice_key(ICB_KEY, "101"), lookup())
    assert own.rows["nhs_number"].to_list() == [NHS[3], NHS[1], NHS[2]]  # patient 4 is not listed
    assert own.rows["reasons"].to_list() == ["reason for 3", "reason for 1", "reason for 2"]
    assert own.rows.columns == ["nhs_number", "pseudonym", "practice_pseudo_id", "reasons"]
    assert (own.listed, own.found, own.not_found) == (3, 3, 0)


def test_another_practices_key_or_another_icb_key_recovers_none():
    rows = pcn_list()
    for key in (practice_key(ICB_KEY, "202"), practice_key(OTHER_ICB_KEY, "101"), ICB_KEY):
        assert reidentify(rows, "101", key, lookup()).found == 0
    # nor can practice 202, with its own key and a lookup holding 101's patients, reach 101's rows
    theirs = reidentify(rows, "202", practice_key(ICB_KEY, "202"), lookup((1, 2, 3, 4, 5)))
    assert theirs.rows["nhs_number"].to_list() == [NHS[5], None]


def test_a_listed_patient_missing_from_the_lookup_is_counted_and_kept_not_dropped():
    own = reidentify(pcn_list(), "101", practice_key(ICB_KEY, "101"), lookup((1, 2)))  # patient 3 left
    assert own.rows["nhs_number"].to_list() == [None, NHS[1], NHS[2]]
    assert (own.listed, own.found, own.not_found) == (3, 2, 1)
    assert "1 not found in it" in own.summary_lines()[0]
    assert "not in the lookup" in own.summary_lines()[1] and "kept" in own.summary_lines()[1]


def test_the_practice_key_file_is_owner_only_never_overwritten_and_read_back(tmp_path):
    path = write_practice_key(ICB_KEY, "101", tmp_path / "101.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == practice_key(ICB_KEY, "101").hex() + "\n"
    assert read_practice_key(path) == practice_key(ICB_KEY, "101")
    with pytest.raises(ConfigError, match="exists: phm does not overwrite it"):
        write_practice_key(OTHER_ICB_KEY, "101", path)
    assert read_practice_key(path) == practice_key(ICB_KEY, "101")


@pytest.mark.parametrize("content,mode,message", [
    ("ab" * 31 + "a\n", 0o600, "holds 63 characters; a practice key is 64"),
    ("ab" * 32 + "00\n", 0o600, "holds 66 characters"),
    ("zz" * 32 + "\n", 0o600, "is not a practice key"),
    ("ab" * 32 + "\n", 0o640, "readable by others"),
])
def test_a_key_file_of_the_wrong_length_form_or_permissions_is_refused_without_echoing_it(tmp_path, content, mode,
                                                                                          message):
    path = tmp_path / "practice.key"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(PracticeFileError, match=message) as caught:
        read_practice_key(path)
    assert str(path) in str(caught.value) and content.strip()[:16] not in str(caught.value)


@pytest.mark.parametrize("practice", ["012", "1a", "../101", "101 ", "", "-1", "1" * 19])
def test_a_practice_id_not_of_the_lists_form_is_refused_before_it_names_a_file(tmp_path, practice):
    with pytest.raises(ConfigError, match="--practice: a practice id is the list's practice_pseudo_id"):
        check_practice_id(practice)
    with pytest.raises(ConfigError):
        write_practice_key(ICB_KEY, practice, tmp_path / "x.key")
    assert not (tmp_path / "x.key").exists()


def write(path, rows: list[list[str]]) -> None:
    path.write_text("".join(",".join(r) + "\n" for r in rows))


@pytest.mark.parametrize("rows,row,column,message", [
    ([["patient_id", "nhs"], ["1", NHS[1]]], None, "nhs_number", "required column is missing"),
    ([["patient_id", "nhs_number"], ["1", NHS[1]], ["2", "9990000027"]], 2, "nhs_number", "not a valid NHS number"),
    ([["patient_id", "nhs_number"], ["1", "999000001"]], 1, "nhs_number", "not a valid NHS number"),
    ([["patient_id", "nhs_number"], ["1", ""]], 1, "nhs_number", "not a valid NHS number"),
    ([["patient_id", "nhs_number"], ["1", NHS[1]], ["x2", NHS[2]]], 2, "patient_id", "not a whole number"),
    ([["patient_id", "nhs_number"], ["1", NHS[1]], ["2", NHS[2]], ["01", NHS[3]]], 3, "patient_id",
     "two rows give one patient_id"),
    ([["patient_id", "nhs_number"], ["1", NHS[1]], ["2", NHS[2]], ["3", NHS[1]]], 3, "nhs_number",
     "two patients share one NHS number"),
    ([["patient_id", "nhs_number"]], None, None, "has a header but no rows"),
])
def test_a_faulty_lookup_is_refused_naming_file_row_and_column_never_the_number(tmp_path, rows, row, column, message):
    path = tmp_path / "patients.csv"
    write(path, rows)
    with pytest.raises(PracticeFileError, match=message) as caught:
        read_lookup(path)
    text = str(caught.value)
    assert text.startswith(f"file {path}")
    assert (f", row {row}" in text) if row else ", row " not in text
    assert (f"column '{column}'" in text) if column else True
    assert not any(n in text for n in [*NHS.values(), "9990000027", "999000001"])


def test_the_lookup_takes_nhs_numbers_as_clinical_systems_display_them_and_ids_as_ingest_reads_them(tmp_path):
    path = tmp_path / "patients.csv"
    write(path, [["nhs_number", "patient_id", "surname"], ["999 000 0018", "0001", "A"], ["9990000026", "2", "B"]])
    assert read_lookup(path).to_dicts() == [{"patient_id": "1", "nhs_number": NHS[1]},
                                            {"patient_id": "2", "nhs_number": NHS[2]}]


@pytest.mark.parametrize("rows,message", [
    ([["practice_pseudo_id", "reasons"], ["101", "x"]], "column 'pseudonym': required column is missing"),
    ([["pseudonym", "practice_pseudo_id"], ["0" * 20, "101"], ["not-a-pseudonym", "101"]],
     "row 2, column 'pseudonym': not a pseudonym"),
    ([["nhs_number", "pseudonym", "practice_pseudo_id"], ["", "0" * 20, "101"]], "already has an nhs_number column"),
])
def test_a_list_not_as_published_is_refused(tmp_path, rows, message):
    path = tmp_path / "U00001.csv"
    write(path, rows)
    with pytest.raises(PracticeFileError, match=message):
        read_list(path)


def test_a_parquet_list_reads_as_its_csv_with_list_columns_joined(tmp_path):
    rows = pcn_list().with_columns(pl.col("reasons").str.split(" "))
    rows.write_parquet(tmp_path / "U00001.parquet")
    read = read_list(tmp_path / "U00001.parquet")
    assert read["reasons"].to_list() == ["reason; for; 3", "reason; for; 1", "reason; for; 5", "reason; for; 2",
                                         "reason; for; 6"]
    own = reidentify(read, "101", practice_key(ICB_KEY, "101"), lookup())
    assert own.rows["nhs_number"].to_list() == [NHS[3], NHS[1], NHS[2]]


def test_the_outputs_are_owner_only_in_the_lists_order_and_never_overwritten(tmp_path):
    own = reidentify(pcn_list(), "101", practice_key(ICB_KEY, "101"), lookup((1, 2)))
    listed, numbers = write_outputs(own, tmp_path / "out")
    assert [stat.S_IMODE(p.stat().st_mode) for p in (listed, numbers)] == [0o600, 0o600]
    assert numbers.read_text() == f"{NHS[1]}\n{NHS[2]}\n"  # the re-identified, in the list's order; no header
    written = pl.read_csv(listed, infer_schema=False)
    assert written["nhs_number"].to_list() == [None, NHS[1], NHS[2]] and written.columns[0] == "nhs_number"
    with pytest.raises(ConfigError, match="exists: phm does not overwrite it"):
        write_outputs(own, tmp_path / "out")


def test_the_re_ask_worklist_is_written_under_names_of_its_own_beside_the_list(tmp_path):
    """Finding 5: re-identifying the ethnicity re-ask worklist wrote practice_<id>_list_with_nhs_numbers.csv
    and practice_<id>_nhs_numbers.txt, the targeting list's names: the worklist's NHS numbers could
    be imported as the recall group, and re-identifying both into one folder failed."""
    key = practice_key(ICB_KEY, "101")
    worklist = pcn_list().select("pseudonym", "practice_pseudo_id", pl.lit("codes of more than one ethnic category")
                                 .alias("reask_reason"), pl.lit("no").alias("on_targeting_list"))
    listed, numbers = write_outputs(reidentify(pcn_list(), "101", key, lookup()), tmp_path)
    reask = reidentify(worklist, "101", key, lookup())
    assert reask.reask and reask.summary_lines()[0].startswith(
        "practice 101: 3 patients on the ethnicity re-ask worklist, 3 re-identified")
    reask_listed, reask_numbers = write_outputs(reask, tmp_path)  # the same folder: nothing in the way
    assert (listed.name, numbers.name) == ("practice_101_list_with_nhs_numbers.csv", "practice_101_nhs_numbers.txt")
    assert (reask_listed.name, reask_numbers.name) == ("practice_101_ethnicity_reask_with_nhs_numbers.csv",
                                                       "practice_101_ethnicity_reask_nhs_numbers.txt")
    assert reask_numbers.read_text() == numbers.read_text() == f"{NHS[3]}\n{NHS[1]}\n{NHS[2]}\n"
    assert pl.read_csv(reask_listed, infer_schema=False).columns == ["nhs_number", *worklist.columns]
