-- mart_hypertension_case_finding: one row per registered adult (18+), the hypertension finding.
--
-- Clinic readings are paired by day (the day's highest systolic and highest diastolic). A
-- reading is 'at or above 140/90' when systolic >= 140 or diastolic >= 90 (NICE NG136).
-- Findings, first that applies:
--   possible_undiagnosed_urgent  no hypertension diagnosis, a reading >= 180/120 in 12 months
--   possible_undiagnosed         no diagnosis, the last two readings in 12 months >= 140/90
--   above_target                 diagnosed, latest reading in 12 months above the CVDPREVENT
--                                target (under 80: 140/90; 80 and over: 150/90)
--   no_recent_reading            diagnosed, no reading in 12 months
--   no_bp_in_5_years             aged 45+, no reading in 5 years
-- bp_stage is the NG136 stage of the latest reading in 5 years: normal, stage_1 (140/90 to
-- 159/99), stage_2 (160/100 and over), severe (180/120 and over).
with parameters as (
    select index_date from features.parameters
),

readings as (
    select
        e.patient_id,
        e.date,
        max(e.numeric_value) filter (where c.concept = 'systolic_bp') as sbp,
        max(e.numeric_value) filter (where c.concept = 'diastolic_bp') as dbp
    from main.clinical_events as e
    join ref.codelist_codes as c on c.code = e.snomedct_code
    cross join parameters as p
    where c.concept in ('systolic_bp', 'diastolic_bp')
      and e.numeric_value is not null
      and e.date <= p.index_date
      and e.date > p.index_date - interval 5 year
    group by e.patient_id, e.date
),

ranked as (
    select
        r.*,
        r.date > p.index_date - interval 12 month as in_12_months,
        coalesce(r.sbp >= 140, false) or coalesce(r.dbp >= 90, false) as raised,
        coalesce(r.sbp >= 180, false) or coalesce(r.dbp >= 120, false) as severe,
        row_number() over (partition by r.patient_id order by r.date desc) as recency
    from readings as r
    cross join parameters as p
),

per_patient as (
    select
        patient_id,
        max(sbp) filter (where recency = 1) as latest_sbp_mmhg,
        max(dbp) filter (where recency = 1) as latest_dbp_mmhg,
        max(date) as latest_bp_date,
        count(*) filter (where in_12_months) as readings_12_months,
        bool_or(severe and in_12_months) as severe_in_12_months,
        count(*) filter (where recency <= 2 and in_12_months and raised) = 2 as last_two_raised
    from ranked
    group by patient_id
),

joined as (
    select
        f.patient_id,
        f.age_years,
        f.hypertension,
        b.latest_sbp_mmhg,
        b.latest_dbp_mmhg,
        b.latest_bp_date,
        coalesce(b.readings_12_months, 0) as readings_12_months,
        coalesce(b.severe_in_12_months, false) as severe_in_12_months,
        coalesce(b.last_two_raised, false) as last_two_raised,
        case when f.age_years >= 80 then 150 else 140 end as target_sbp_mmhg
    from marts.mart_patient_features as f
    left join per_patient as b using (patient_id)
    where f.age_years >= 18
),

final as (
    select
        patient_id,
        latest_sbp_mmhg,
        latest_dbp_mmhg,
        latest_bp_date,
        case
            when latest_bp_date is null then null
            when latest_sbp_mmhg >= 180 or latest_dbp_mmhg >= 120 then 'severe'
            when latest_sbp_mmhg >= 160 or latest_dbp_mmhg >= 100 then 'stage_2'
            when latest_sbp_mmhg >= 140 or latest_dbp_mmhg >= 90 then 'stage_1'
            else 'normal'
        end as bp_stage,
        case
            when not hypertension and severe_in_12_months then 'possible_undiagnosed_urgent'
            when not hypertension and last_two_raised then 'possible_undiagnosed'
            when hypertension and readings_12_months > 0
                 and (latest_sbp_mmhg > target_sbp_mmhg or latest_dbp_mmhg > 90) then 'above_target'
            when hypertension and readings_12_months = 0 then 'no_recent_reading'
            when age_years >= 45 and latest_bp_date is null then 'no_bp_in_5_years'
        end as finding,
        case
            when not hypertension and severe_in_12_months
                then 'a reading at or above 180/120 in the last 12 months and no hypertension diagnosis: urgent'
            when not hypertension and last_two_raised
                then 'two readings at or above 140/90 in the last 12 months and no hypertension diagnosis'
            when hypertension and readings_12_months > 0
                 and (latest_sbp_mmhg > target_sbp_mmhg or latest_dbp_mmhg > 90)
                then 'hypertension with the latest reading above the target of ' || target_sbp_mmhg || '/90'
            when hypertension and readings_12_months = 0
                then 'hypertension with no blood pressure reading in the last 12 months'
            when age_years >= 45 and latest_bp_date is null
                then 'aged 45 or over with no blood pressure reading in the last 5 years'
        end as finding_reason,
        not hypertension and severe_in_12_months as urgent
    from joined
)

select * from final
