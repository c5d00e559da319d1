"""The ethnicity data-quality report's rule (phm/ethnicity_dq.py) on small hand-made tables: which
practice is flagged and in which direction, that the mix is information and never a flag, that
'any other' is judged against what the census expects for the practice's own mix, and that every
published figure is suppressed. The truth tests are tests/integration/test_ethnicity_dq_truth.py."""

from __future__ import annotations

import json

import polars as pl
import pytest

from features.ethnicity_benchmark import census_benchmark
from flows.config import load_config
from phm.ethnicity_dq import assess, history_rows, holm, robust_tau2
from phm.ethnicity_dq_report import render
from phm.exceptions import ConfigError
from phm.synth import SynthConfig, generate

BENCHMARK, SOURCE = census_benchmark()


def practice(pid: int, n: int = 1000, pcn: str = "U1", not_known: float = 0.10, not_stated: float = 0.02,
             conflicts: float = 0.04, letters: dict[str, float] | None = None) -> pl.DataFrame:
    """``n`` patients: shares not known (99), not stated (Z), and the rest stated in ``letters``
    (shares of the stated; default: British 86%, any other White 8%, Indian 4%, African 2%)."""
    letters = letters or {"A": 0.86, "C": 0.08, "H": 0.04, "N": 0.02}
    k99, kz = round(n * not_known), round(n * not_stated)
    stated = n - k99 - kz
    categories = ["99"] * k99 + ["Z"] * kz
    for i, (letter, share) in enumerate(letters.items()):
        count = stated - sum(round(stated * s) for s in list(letters.values())[:-1]) if i == len(letters) - 1 \
            else round(stated * share)
        categories += [letter] * count
    k_conflict = round(stated * conflicts)
    return pl.DataFrame({
        "practice_pseudo_id": [pid] * n, "pcn_code": [pcn] * n, "ethnicity_category": categories,
        "ethnicity_has_conflicting_codes": [False] * (k99 + kz) + [True] * k_conflict + [False] * (stated - k_conflict),
        "ethnicity_source": [None] * (k99 + kz) + ["primary_care"] * stated,
    })


def icb(*practices: pl.DataFrame) -> pl.DataFrame:
    return pl.concat(practices)


def test_a_practice_with_many_patients_not_known_is_flagged_and_says_so():
    frame = icb(*[practice(i, not_known=0.10 + 0.005 * i) for i in range(1, 8)], practice(8, not_known=0.30))
    dq = assess(frame, BENCHMARK, SOURCE, {"8": "Z10008"})
    assert [(j.unit, j.indicator) for j in dq.flags] == [("8", "not_known_99")]
    flag = dq.flags[0]
    assert "not known" in flag.direction and flag.value == pytest.approx(0.30) and flag.z > 3
    assert flag.typical == pytest.approx(0.1225)  # the median practice (of 8), not the pooled rate
    assert dq.published()["flags"][0]["practice"] == "Z10008"


def test_low_not_known_is_never_a_flag_and_ordinary_spread_is_not_flagged():
    # one practice records better than the rest: good, not flagged; the others vary within chance
    frame = icb(*[practice(i, not_known=0.10 + 0.01 * (i % 3)) for i in range(1, 8)], practice(8, not_known=0.01))
    assert assess(frame, BENCHMARK, SOURCE).flags == []


def test_spread_between_practices_beyond_sampling_widens_the_funnel():
    # the ICB's practices really differ (8% to 20% not known): a practice at 22% is within that spread
    shares = [0.08, 0.10, 0.12, 0.14, 0.16, 0.18, 0.20, 0.22]
    frame = icb(*[practice(i, n=2000, not_known=s) for i, s in enumerate(shares, 1)])
    dq = assess(frame, BENCHMARK, SOURCE)
    assert dq.flags == []
    assert next(j for j in dq.judgements if j.indicator == "not_known_99").tau > 0.02


def test_not_stated_and_conflicts_are_judged_apart_from_not_known():
    frame = icb(*[practice(i) for i in range(1, 7)], practice(7, not_stated=0.10), practice(8, conflicts=0.20))
    flags = {(j.unit, j.indicator) for j in assess(frame, BENCHMARK, SOURCE).flags}
    assert flags == {("7", "not_stated_z"), ("8", "conflicting_codes")}


def test_a_practice_whose_population_differs_is_not_flagged_for_its_mix_nor_for_its_any_other():
    # Asian-majority practice recording as well as the rest: its 'any other Asian' share is what the
    # census expects of Asian patients (19% of them), far above the White practices' 'any other'
    asian = {"H": 0.35, "J": 0.25, "K": 0.11, "L": 0.16, "A": 0.12, "C": 0.01}
    frame = icb(*[practice(i) for i in range(1, 8)], practice(8, letters=asian))
    dq = assess(frame, BENCHMARK, SOURCE)
    assert dq.flags == []
    findings = dq.unit("practice", "8").mix_findings  # information: shown, not flagged
    assert findings["White"] == "below" and findings["Asian"] == "above"


def test_any_other_over_use_is_flagged_against_what_the_census_expects_for_the_practice():
    overused = {"A": 0.66, "C": 0.28, "H": 0.04, "N": 0.02}
    frame = icb(*[practice(i) for i in range(1, 8)], practice(8, letters=overused))
    dq = assess(frame, BENCHMARK, SOURCE)
    assert [(j.unit, j.indicator) for j in dq.flags] == [("8", "any_other")]
    figure = dq.unit("practice", "8").figures["any_other"]
    # expected: the census's 'any other' share within each broad group of the practice's patients
    assert figure.expected == pytest.approx(figure.denominator * (0.94 * 6.5 / 81.8 + 0.04 * 1.6 / 8.5
                                                                  + 0.02 * 0.5 / 4.0), rel=0.01)


def test_too_few_practices_or_patients_are_not_judged():
    dq = assess(icb(*[practice(i) for i in range(1, 4)], practice(4, not_known=0.6)), BENCHMARK, SOURCE)
    assert not dq.judged and dq.flags == [] and "no practice is flagged" in render(dq, "QXX")
    tiny = practice(9, n=30, not_known=0.9)  # under MIN_DENOMINATOR: shown, not judged
    dq = assess(icb(*[practice(i) for i in range(1, 8)], tiny), BENCHMARK, SOURCE)
    assert "9" not in {j.unit for j in dq.judgements} and dq.flags == []


def test_every_published_count_is_suppressed_and_shares_come_from_rounded_counts():
    frame = icb(*[practice(i, n=1003, not_stated=0.004) for i in range(1, 8)])  # 4 not stated per practice
    dq = assess(frame, BENCHMARK, SOURCE)
    published = dq.published()
    for unit in published["units"]:
        assert unit["patients"] % 5 == 0
        for figure in [*unit["figures"].values(), *unit["mix"].values()]:
            for key in ("count", "denominator"):
                assert figure[key] is None or figure[key] % 5 == 0, figure
        z = unit["figures"]["not_stated_z"]
        if unit["level"] == "practice":
            assert z["withheld"] and z["count"] is None and z["value"] is None and z["low"] is None
        else:
            assert z["value"] == round(z["count"] / z["denominator"], 4)
    text = json.dumps(published)
    assert "1003" not in text and '"count": 4' not in text
    assert all(value is None or row[0] == "ethnicity dq" for *row, value, _ in
               [(r[0], r[4], r[5]) for r in history_rows(dq)])


def test_holm_and_the_robust_spread():
    assert holm([0.01, 0.04, 0.03, 0.2], 0.05) == [(0.04, True), (0.09, False), (0.09, False), (0.2, False)]
    assert robust_tau2([0.1, 0.1, 0.1], [0.01, 0.01, 0.01], 0.1) == 0.0
    tau2 = robust_tau2([0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0, 0.0], 2.0)
    assert 1.0 / tau2 ** 0.5 == pytest.approx(0.6745, abs=1e-3)


def test_census_benchmark_is_the_2021_mix_and_a_local_table_can_replace_it(tmp_path):
    assert sum(BENCHMARK.values()) == pytest.approx(1.0)
    assert sum(BENCHMARK[c] for c in "CGLPS") == pytest.approx(0.116, abs=0.001)  # percentages to one decimal sum to 100.1
    local = tmp_path / "local.csv"
    local.write_text("category,share_pct\n" + "\n".join(f"{c},{50 if c == 'H' else 2}" for c in BENCHMARK))
    shares, source = census_benchmark(local)
    assert shares["H"] > 0.5 and "local.csv" in source
    local.write_text("category,share_pct\nA,100\n")
    with pytest.raises(ConfigError, match="each category A-S"):
        census_benchmark(local)


def test_configuration(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[ethnicity_dq]\nalpha = 0.01\nmin_practices = 6\ncensus_table = "x.csv"\n')
    assert load_config(path).ethnicity_dq.alpha == 0.01
    path.write_text("[ethnicity_dq]\nalfa = 0.01\n")
    with pytest.raises(ConfigError, match="ethnicity_dq.alfa: unknown key"):
        load_config(path)


def test_per_practice_knobs_use_the_draws_made_anyway(tmp_path):
    generate(SynthConfig(patients=1500, seed=3), tmp_path / "a")
    generate(SynthConfig(patients=1500, seed=3, ethnicity_unrecorded_practice={"Z10001": 0.15},
                         ethnicity_misrecording_practice={"Z10002": 0.0}), tmp_path / "b")
    for name in ("clinical_events.parquet", "patients.parquet", "practices.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with pytest.raises(ConfigError, match="does not exist"):
        generate(SynthConfig(patients=1500, seed=3, ethnicity_unrecorded_practice={"Z10099": 0.5}), tmp_path / "c")
    with pytest.raises(ConfigError, match="ODS code"):
        SynthConfig(ethnicity_misrecording_practice={"P3": 0.5}).validate()


def test_a_census_table_by_lsoa_gives_each_practice_the_mix_of_its_patients_areas(tmp_path):
    from features.ethnicity_benchmark import lsoa_benchmarks
    from phm.db import SQL_DIR, in_memory

    # the mart: registered patients per practice and LSOA of their address on the index date
    with in_memory() as con:
        con.execute("create schema features; create schema intermediate")
        con.execute("create table features.parameters as select date '2026-03-31' as index_date, "
                    "'IMD2019' as imd_version, 32844 as imd_lsoa_count")
        con.execute("create table intermediate.int_patients_registered as select * from (values "
                    "(1, 8), (2, 8), (3, 8), (4, 9)) t(patient_id, practice_pseudo_id)")
        con.execute("create table main.addresses as select * from (values "
                    "(1, date '2020-01-01', null, 'E01000001', 100), (2, date '2020-01-01', null, 'E01000002', 200),"
                    "(3, date '2010-01-01', date '2019-12-31', 'E01000002', 200), (3, date '2020-01-01', null, 'E01000001', 100),"
                    "(4, date '2027-01-01', null, 'E01000002', 200)) "
                    "t(patient_id, start_date, end_date, lsoa_code, imd_rounded)")
        con.execute("alter table main.addresses add column townsend_score double")
        con.execute("create table intermediate.int_patient_deprivation as "
                    + (SQL_DIR / "intermediate" / "int_patient_deprivation.sql").read_text())
        lsoas = con.execute((SQL_DIR / "marts" / "mart_practice_lsoa.sql").read_text()).pl()
    assert sorted(lsoas.rows()) == [(8, "E01000001", 2), (8, "E01000002", 1), (9, None, 1)]
    table = tmp_path / "ts021_lsoa.csv"
    table.write_text("lsoa_code,category,residents\n" + "\n".join(
        f"E01000001,{c},{700 if c == 'H' else 300 if c == 'A' else 0}" for c in BENCHMARK) + "\n" + "\n".join(
        f"E01000002,{c},{1000 if c == 'A' else 0}" for c in BENCHMARK))
    local = lsoa_benchmarks(table, lsoas)
    assert set(local) == {"8"}  # practice 9's one patient has no known area: it keeps the run's benchmark
    assert local["8"]["H"] == pytest.approx(2 * 0.7 / 3) and local["8"]["A"] == pytest.approx((2 * 0.3 + 1) / 3)
    # read against its own areas, an Asian-majority practice recording what its areas hold is not 'above'
    asian = {"H": 0.47, "A": 0.53}
    frame = icb(*[practice(i) for i in range(1, 8)], practice(8, letters=asian))
    national = assess(frame, BENCHMARK, SOURCE)
    own = assess(frame, BENCHMARK, SOURCE, practice_benchmarks=local)
    assert national.unit("practice", "8").mix_findings["Asian"] == "above"
    assert "Asian" not in own.unit("practice", "8").mix_findings
    assert own.published()["local_benchmark_practices"] == ["8"]
    # and its expected 'any other' comes from its areas (no 'any other' there): observed / expected grows
    assert own.unit("practice", "8").figures["any_other"].expected == 0.0
    assert own.unit("practice", "8").published()["figures"]["any_other"]["value"] is None  # no ratio on nothing
    json.loads(json.dumps(own.published()), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))


def test_nomis_ts021_file_by_lsoa_is_read_as_downloaded_with_its_19_groups_mapped_to_nhs_letters(tmp_path):
    from features.ethnicity_benchmark import TS021_GROUPS, read_lsoa_table

    sections = {"white": "White", "mixed or multiple ethnic groups": "Mixed or Multiple ethnic groups",
                "asian, asian british or asian welsh": "Asian, Asian British or Asian Welsh",
                "black, black british, black welsh, caribbean or african":
                    "Black, Black British, Black Welsh, Caribbean or African",
                "other ethnic group": "Other ethnic group"}
    groups = [f"Ethnic group: {sections[s]}: {g[0].upper()}{g[1:]}" for s, g in TS021_GROUPS]
    totals = ["Ethnic group: Total: All usual residents", *(f"Ethnic group: {s}" for s in sections.values())]
    header = ["date", "geography", "geography code", totals[0], *totals[1:], *groups]
    rows = [["2021", "Area 1", "E01000001", "1000", *["0"] * 5, *[str(10 * (i + 1)) for i in range(19)]],
            ["2021", "Area 2", "E01000002", "500", *["0"] * 5, *["5"] * 19]]
    wide = tmp_path / "census2021-ts021-lsoa.csv"
    wide.write_text("\n".join(",".join(f'"{v}"' for v in row) for row in [header, *rows]) + "\n")
    long = read_lsoa_table(wide)
    assert long.columns == ["lsoa_code", "category", "residents"] and long.height == 2 * 19
    area1 = long.filter(pl.col("lsoa_code") == "E01000001").group_by("category").agg(pl.col("residents").sum())
    by_letter = dict(area1.rows())
    # Gypsy or Irish Traveller (3rd), Roma (4th) and Other White (5th) are C; Arab and any other are S
    assert by_letter["A"] == 10 and by_letter["B"] == 20 and by_letter["C"] == 30 + 40 + 50
    assert by_letter["S"] == 180 + 190 and set(by_letter) == set(BENCHMARK)
    # a file that is neither layout says which groups are missing
    wide.write_text('"geography code","Ethnic group: White: Irish"\n"E01000001","3"\n')
    with pytest.raises(ConfigError, match="TS021 layout.*missing.*white / roma"):
        read_lsoa_table(wide)
