-- int_patient_ckd: one row per patient with a CKD stage code or an eGFR result, and their CKD
-- stage if it is 3, 4 or 5.
--
-- Rule (QOF CKD register, NHS England business rules: CKD_COD stage 3-5 codes, CKD1AND2_COD
-- stage 1-2 codes; NICE NG203 and KDIGO 2012 for eGFR):
--   1. The latest CKD stage code (stage 1 to 5) or CKD resolved code (CKDRES_COD) on or before the
--      index date decides: stage 3, 4 or 5 is CKD 3-5; a later stage 1 or 2 code (the stage was
--      revised) or a later resolved code means it is not. Same-day codes: the highest stage wins
--      over a resolved code, so the result does not depend on row order.
--   2. With no such code, or when the latest is a resolved code and both eGFR results below are
--      later than it: the stage from eGFR when the last two results in 2 years are
--      both below 60 mL/min/1.73m2 and at least 90 days apart (KDIGO: reduced for more than 3
--      months; one low result can be an acute kidney injury); stage from the latest result:
--      30-59 -> 3, 15-29 -> 4, under 15 -> 5 (same-day results: the lowest).
-- ckd_stage: 3, 4, 5 or null; ckd_stage_source: 'code' or 'egfr'.
with parameters as (
    select index_date, cast(index_date - interval 2 year as date) as two_years_before
    from features.parameters
),

-- the codes read here with the run's dates: the events are joined on their code alone (DuckDB
-- then skips other codes while it reads them), the dates compared after
codes as (
    select c.code, c.concept, c.category, p.*
    from ref.codelist_codes as c
    cross join parameters as p
    where c.concept in ('ckd_3_5', 'ckd_1_2', 'ckd_resolved', 'egfr')
),

stage_codes as (
    select e.patient_id, e.date, max(coalesce(c.category::integer, 0)) as stage  -- resolved: 0
    from main.clinical_events as e
    join codes as c on c.code = e.snomedct_code
    where c.concept in ('ckd_3_5', 'ckd_1_2', 'ckd_resolved') and e.date <= c.index_date
    group by e.patient_id, e.date
),

latest_code as (
    select patient_id, arg_max(stage, date) as coded_stage, max(date) as coded_date
    from stage_codes
    group by patient_id
),

egfr as (
    select
        e.patient_id,
        e.date,
        min(e.numeric_value) as value,
        row_number() over (partition by e.patient_id order by e.date desc) as recency
    from main.clinical_events as e
    join codes as c on c.concept = 'egfr' and c.code = e.snomedct_code
    where e.numeric_value is not null
      and e.date <= c.index_date
      and e.date > c.two_years_before
    group by e.patient_id, e.date
),

egfr_stage as (
    select
        patient_id,
        case
            when max(value) filter (where recency = 1) < 15 then 5
            when max(value) filter (where recency = 1) < 30 then 4
            else 3
        end as egfr_stage,
        min(date) as first_of_two
    from egfr
    where recency <= 2
    group by patient_id
    having count(*) = 2
       and max(value) < 60
       and max(date) - min(date) >= 90
),

final as (
    select
        patient_id,
        case when l.coded_stage >= 3 then l.coded_stage
             when l.patient_id is null or (l.coded_stage = 0 and g.first_of_two > l.coded_date) then g.egfr_stage
        end as ckd_stage,
        case when l.coded_stage >= 3 then 'code'
             when (l.patient_id is null or (l.coded_stage = 0 and g.first_of_two > l.coded_date))
                  and g.egfr_stage is not null then 'egfr'
        end as ckd_stage_source
    from latest_code as l
    full outer join egfr_stage as g using (patient_id)
)

select * from final
