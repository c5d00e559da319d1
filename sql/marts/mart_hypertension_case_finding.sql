-- mart_hypertension_case_finding: one row per registered adult (18+), the hypertension finding.
--
-- Clinic readings are paired by day (the day's highest systolic and highest diastolic). A
-- reading is 'at or above 140/90' when systolic >= 140 or diastolic >= 90 (NICE NG136).
-- Clinic readings only: ambulatory (ABPM) and home summaries are not clinic readings (NG136
-- gives them their own thresholds) and are read separately: monitoring_12_months is an ABPM or
-- home monitoring code in the 12 months; monitored_sbp/dbp the mean of the systolic and diastolic
-- ABPM/home readings on the latest day they were recorded in 12 months.
-- Findings, first that applies:
--   possible_undiagnosed_urgent  no hypertension diagnosis, the latest reading (in 12 months)
--                                >= 180/120 (NG136: same-day assessment); an earlier severe
--                                reading followed by lower ones is not urgent
--   confirmed_not_coded          no diagnosis, ABPM/home mean >= 135/85 in 12 months: NG136's
--                                confirmation of hypertension, which the record does not code
--   possible_undiagnosed         no diagnosis, the last two readings in 12 months >= 140/90
--                                (when ABPM/home monitoring was done in 12 months the lists set
--                                this reason aside: the confirmation step has happened)
--   above_target                 diagnosed, latest reading in 12 months above the CVDPREVENT
--                                target (under 80: 140/90; 80 and over: 150/90)
--   no_recent_reading            diagnosed, no reading in 12 months
--   no_bp_in_5_years             aged 45+, no reading in 5 years
-- bp_stage is the NG136 stage of the latest reading in 5 years: normal, stage_1 (140/90 to
-- 159/99), stage_2 (160/100 and over), severe (180/120 and over).
with parameters as (
    -- the look-back windows' first days as dates, so each reading's date is compared as it is
    select
        index_date,
        cast(index_date - interval 12 month as date) as twelve_months_before,
        cast(index_date - interval 5 year as date) as five_years_before
    from features.parameters
),

-- the codes read here with the run's dates: the events are joined on their code alone (DuckDB
-- then skips other codes while it reads them), the dates compared after
codes as (
    select c.code, c.concept, c.category, p.*
    from ref.codelist_codes as c
    cross join parameters as p
    where c.concept in ('systolic_bp', 'diastolic_bp', 'abpm', 'home_bp')
),

readings as (
    select
        e.patient_id,
        e.date,
        max(e.numeric_value) filter (where c.concept = 'systolic_bp') as sbp,
        max(e.numeric_value) filter (where c.concept = 'diastolic_bp') as dbp
    from main.clinical_events as e
    join codes as c on c.code = e.snomedct_code
    where c.concept in ('systolic_bp', 'diastolic_bp')
      and e.numeric_value is not null
      and e.date <= c.index_date
      and e.date > c.five_years_before
    group by e.patient_id, e.date
),

ranked as (
    select
        r.*,
        r.date > p.twelve_months_before as in_12_months,
        coalesce(r.sbp >= 140, false) or coalesce(r.dbp >= 90, false) as raised,
        coalesce(r.sbp >= 180, false) or coalesce(r.dbp >= 120, false) as severe
    from readings as r
    cross join parameters as p
),

-- one row per day in readings, so the latest day is the row with the highest date (no ties);
-- arg_max_null keeps that day's value when it is null (the day had only the other reading)
per_patient as (
    select
        patient_id,
        arg_max_null(sbp, date) as latest_sbp_mmhg,
        arg_max_null(dbp, date) as latest_dbp_mmhg,
        max(date) as latest_bp_date,
        count(*) filter (where in_12_months) as readings_12_months,
        arg_max_null(severe and in_12_months, date) as latest_severe,
        -- the two latest readings both raised and in 12 months: the two latest of the 12 months'
        -- readings (any later reading is in them too) both raised
        coalesce(max_by(raised, date, 2) filter (where in_12_months) = [true, true], false) as last_two_raised
    from ranked
    group by patient_id
),

monitoring as (
    select
        patient_id,
        max(date) as monitoring_date,
        avg(value) filter (where part = 'systolic' and date = last_day) as monitored_sbp,
        avg(value) filter (where part = 'diastolic' and date = last_day) as monitored_dbp
    from (
        select e.patient_id, e.date, c.category as part, e.numeric_value as value,
               max(e.date) filter (where e.numeric_value is not null and c.category <> 'procedure')
                   over (partition by e.patient_id) as last_day
        from main.clinical_events as e
        join codes as c on c.code = e.snomedct_code
        where c.concept in ('abpm', 'home_bp')
          and e.date <= c.index_date
          and e.date > c.twelve_months_before
    )
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
        coalesce(b.latest_severe, false) as latest_severe,
        m.monitoring_date is not null as monitoring_12_months,
        m.monitored_sbp,
        m.monitored_dbp,
        coalesce(b.last_two_raised, false) as last_two_raised,
        case when f.age_years >= 80 then 150 else 140 end as target_sbp_mmhg
    from marts.mart_patient_features as f
    left join per_patient as b using (patient_id)
    left join monitoring as m using (patient_id)
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
            when not hypertension and latest_severe then 'possible_undiagnosed_urgent'
            when not hypertension and (monitored_sbp >= 135 or monitored_dbp >= 85) then 'confirmed_not_coded'
            when not hypertension and last_two_raised then 'possible_undiagnosed'
            when hypertension and readings_12_months > 0
                 and (latest_sbp_mmhg > target_sbp_mmhg or latest_dbp_mmhg > 90) then 'above_target'
            when hypertension and readings_12_months = 0 then 'no_recent_reading'
            when age_years >= 45 and latest_bp_date is null then 'no_bp_in_5_years'
        end as finding,
        case
            when not hypertension and latest_severe
                then 'latest reading at or above 180/120 (in the last 12 months) and no hypertension diagnosis: urgent'
            when not hypertension and (monitored_sbp >= 135 or monitored_dbp >= 85)
                then 'ambulatory or home blood pressure at or above 135/85 in the last 12 months (NICE NG136 confirms hypertension) and no hypertension diagnosis coded'
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
        not hypertension and latest_severe as urgent,
        monitoring_12_months
    from joined
)

select * from final
