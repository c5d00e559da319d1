-- mart_practice_lsoa: registered patients per practice and LSOA of their address on the index date.
--
-- Aggregate (no patient rows): what the ethnicity data-quality report weights a per-LSOA census
-- table by, to give each practice the census mix of its registered population's areas
-- (docs/ethnicity.md; ONS Census 2021 TS021 ethnic group by LSOA, configured as
-- [ethnicity_dq] census_by_lsoa). The address current on the index date, as
-- int_patient_deprivation.sql takes it (the most recently started, then the higher IMD rank);
-- patients with no address or an unknown area are counted under a null lsoa_code.
with parameters as (
    select index_date from features.parameters
),

current_address as (
    select
        a.patient_id,
        a.lsoa_code,
        row_number() over (
            partition by a.patient_id order by a.start_date desc, a.imd_rounded desc
        ) as recency
    from main.addresses as a, parameters as p
    where a.start_date <= p.index_date
      and (a.end_date is null or a.end_date >= p.index_date)
),

final as (
    select r.practice_pseudo_id, c.lsoa_code, count(*) as patients
    from intermediate.int_patients_registered as r
    left join current_address as c on c.patient_id = r.patient_id and c.recency = 1
    group by all
)

select * from final
