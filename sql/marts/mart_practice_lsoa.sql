-- mart_practice_lsoa: registered patients per practice and LSOA of their address on the index date.
--
-- Aggregate (no patient rows): what the ethnicity data-quality report weights a per-LSOA census
-- table by, to give each practice the census mix of its registered population's areas
-- (docs/ethnicity.md; ONS Census 2021 TS021 ethnic group by LSOA, configured as
-- [ethnicity_dq] census_by_lsoa). The address current on the index date is
-- int_patient_deprivation's (one rule for both: the most recently started, then the higher IMD
-- rank); patients with no address or an unknown area are counted under a null lsoa_code.
with final as (
    select r.practice_pseudo_id, d.lsoa_code, count(*) as patients
    from intermediate.int_patients_registered as r
    left join intermediate.int_patient_deprivation as d on d.patient_id = r.patient_id
    group by all
)

select * from final
