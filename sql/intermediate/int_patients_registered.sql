-- int_patients_registered: one row per patient registered and alive at the index date.
--
-- Registered: a registration with start_date <= index date and (no end_date or end_date >=
-- index date). Overlapping registrations (real records have them): the one that started most
-- recently wins, then the higher practice_pseudo_id, so the choice is deterministic.
-- Age is whole years at the index date.
with parameters as (
    select index_date from features.parameters
),

active as (
    select
        r.patient_id,
        r.practice_pseudo_id,
        r.start_date,
        row_number() over (
            partition by r.patient_id
            order by r.start_date desc, r.practice_pseudo_id desc
        ) as recency
    from main.practice_registrations as r, parameters as p
    where r.start_date <= p.index_date
      and (r.end_date is null or r.end_date >= p.index_date)
),

final as (
    select
        a.patient_id,
        pt.sex,
        pt.date_of_birth,
        date_diff('year', pt.date_of_birth, p.index_date)
            - case when strftime(p.index_date, '%m%d') < strftime(pt.date_of_birth, '%m%d') then 1 else 0 end
            as age_years,
        a.practice_pseudo_id,
        pr.pcn_code,
        pr.icb_code,
        a.start_date as registered_since
    from active as a
    join main.patients as pt using (patient_id)
    join main.practices as pr using (practice_pseudo_id)
    cross join parameters as p
    where a.recency = 1
      and (pt.date_of_death is null or pt.date_of_death > p.index_date)
)

select * from final
