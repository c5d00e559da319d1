-- int_patient_ethnicity: one row per patient with an ethnicity code on or before the index date,
-- in the GP record or (optional table) in hospital records.
--
-- Rule for conflicting codes: the most frequent stated category, then the latest.
-- ethnicity_category: among the codes that state a census category (NHS letters A-S), the
--   category recorded on the most codes; a tie in count goes to the category recorded latest; a
--   tie in that day too to the alphabetically last letter, so the result never depends on row
--   order. 'Z' (not stated) only when no code states a category: 'not stated' never overrides a
--   stated category, whatever its date or count, and neither do codes that carry no category
--   ('Ethnic group not recorded', 'Unknown racial group', heading codes: category '99' in the
--   codelist), which are left out. Patients with no code, or only '99' codes, are not in this
--   table (the mart calls them '99', not known). No look-back window: ethnicity is a patient's
--   self-identification and rarely changes, and every earlier code is evidence about it.
-- latest_category: the stated category of the latest code (the rule used before this one), kept
--   so the two can be compared (docs/features.md gives the comparison on the generator's truth).
-- has_conflicting_codes: codes of more than one A-S category, ever (up to the index date).
-- non_census_only: the stated category rests only on codes outside the census classifications
--   (SNOMED CT ethnic-group concepts such as 'Caucasian' or 'Greeks' that the codelist maps to a
--   category, against '... - ethnic category 2001 census' and '... 2011 census' codes:
--   ref.ethnicity_census_codes): a data-quality signal of the ethnicity report (docs/ethnicity.md).
-- hospital_category: for every patient with hospital records (the optional table), their most
--   frequent stated hospital category, then the latest (A-S), whatever the GP record says: the
--   report compares it with the GP record's category (disagreement is a misrecording signal).
-- ethnicity_source: 'primary_care', or 'hospital' where the GP record states no category and the
--   optional hospital_ethnicity table does: patients with no GP code, or only '99' codes, take the
--   most frequent stated hospital category (A-S), then the latest (Z, 99 and X there are ignored).
--   A GP code always wins, 'not stated' (Z) included: a patient who declined to state their
--   ethnicity to their practice is not given one from hospital records (OpenSAFELY's variables do
--   fill Z from SUS; this pipeline keeps the patient's answer). latest_category and
--   has_conflicting_codes describe the GP record only.
--
-- Sources: "most frequent, then latest, ignoring not-stated/unknown" is the rule OpenSAFELY applies
-- to hospital (SUS) ethnicity, cohort-extractor's patients.with_ethnicity_from_sus(...,
-- use_most_frequent_code=True): "when multiple codes are present, pick the most frequent one"
-- (opensafely-core/cohort-extractor, cohortextractor/patients.py), and the one OHID/PHE's CHIME
-- tool uses across data sets ("Outputs by ethnic group in CHIME", fingertips.phe.org.uk: the most
-- frequent ethnicity excluding unknown values 99/X/Z; ties to the most recent). OpenSAFELY's
-- primary-care variables take the latest code; in OpenSAFELY-TPP the two agree for 98.7% of
-- patients with several ethnicity records (OpenSAFELY Collaborative, Andrews CD, Mathur R, et al.
-- Consistency, completeness and external validity of ethnicity recording in NHS primary care
-- records: a cohort study in 25 million patients' records at source using OpenSAFELY. BMC Med
-- 2024;22:288, doi:10.1186/s12916-024-03499-5), so the rule changes only the conflicting minority.
-- Hospital records as a second source: OpenSAFELY studies fill ethnicity missing in primary care
-- from SUS ("fill missing ethnicity from SUS": with_ethnicity_from_sus(returning="group_16",
-- use_most_frequent_code=True)); the BMC Med paper above reports completeness rising from 78.2%
-- in primary care to 92.5% with hospital data.
with parameters as (
    select index_date from features.parameters
),

-- the codes read here with the index date: the events are joined on their code alone (DuckDB
-- then skips other codes while it reads them), the date compared after
codes as (
    select c.code, c.category, c.code in (select code from ref.ethnicity_census_codes) as census_code,
        p.index_date
    from ref.codelist_codes as c
    cross join parameters as p
    where c.concept = 'ethnicity'
      and c.category <> '99'
),

coded as (
    select e.patient_id, e.date, c.category, c.census_code
    from main.clinical_events as e
    join codes as c on c.code = e.snomedct_code
    where e.date <= c.index_date
),

per_category as (
    select patient_id, category, count(*) as codes, max(date) as latest_date, bool_or(census_code) as census_coded
    from coded
    where category <> 'Z'
    group by patient_id, category
),

stated as (
    select
        patient_id,
        -- ordered by count, then latest day, then letter
        arg_max(category, (codes, latest_date, category))
            as most_frequent_category,
        arg_max(category, (latest_date, category)) as latest_category,
        count(*) > 1 as has_conflicting_codes,
        arg_max(census_coded, (codes, latest_date, category))
            as census_coded
    from per_category
    group by patient_id
),

primary_care as (
    select
        coded.patient_id,
        coalesce(stated.most_frequent_category, 'Z') as ethnicity_category,
        coalesce(stated.latest_category, 'Z') as latest_category,
        coalesce(stated.has_conflicting_codes, false) as has_conflicting_codes,
        coalesce(not stated.census_coded, false) as non_census_only
    from (select distinct patient_id from coded) as coded
    left join stated using (patient_id)
),

hospital_per_category as (
    select h.patient_id, h.ethnic_category as category, count(*) as codes, max(h.date) as latest_date
    from main.hospital_ethnicity as h
    cross join parameters as p
    where h.date <= p.index_date
      and h.ethnic_category in (select category from ref.ethnic_categories where category not in ('Z', '99'))
    group by h.patient_id, h.ethnic_category
),

hospital as (
    select
        patient_id,
        arg_max(category, (codes, latest_date, category)) as ethnicity_category
    from hospital_per_category
    group by patient_id
),

final as (
    select
        coalesce(pc.patient_id, h.patient_id) as patient_id,
        coalesce(pc.ethnicity_category, h.ethnicity_category) as ethnicity_category,
        pc.latest_category,
        coalesce(pc.has_conflicting_codes, false) as has_conflicting_codes,
        case when pc.patient_id is not null then 'primary_care' else 'hospital' end as ethnicity_source,
        coalesce(pc.non_census_only, false) as non_census_only,
        h.ethnicity_category as hospital_category
    from primary_care as pc
    full outer join hospital as h using (patient_id)
)

select * from final
