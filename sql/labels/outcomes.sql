-- outcomes: one row per patient in marts.mart_patient_features (built for a past index date),
-- time-to-event labels for each outcome over (index date, index date + horizon].
--
-- Only patients free of the outcome at the index date are at risk: incident CVD (CHD, MI,
-- stroke, TIA) for those without CVD; new type 2 diabetes for those without diabetes; new
-- hypertension for those without a current hypertension diagnosis. Others get null (not at
-- risk), never false. These are recorded outcomes: a group whose diagnoses go unrecorded looks
-- healthier here than it is, which is what the fairness audit looks for.
--
-- Follow-up (QRISK3, BMJ 2017;357:j2099 and QDiabetes-2018, BMJ 2017;359:j5019 are Cox models
-- fitted the same way): a patient is followed from the index date to the first of
--   the outcome's first record, the horizon's end, death (patients.date_of_death), or the end of
--   registration (the last registration's end_date when no registration is open; a gap between
--   two registrations is not treated as a leave).
-- <outcome>_event is true only for an outcome recorded within follow-up; <outcome>_followup_years
-- is the time followed. A patient who died or left before the horizon's end without the outcome
-- is censored there (followup_end_reason 'died' or 'left practice'), not event-free: the models
-- estimate the risk had they stayed and lived, as QRISK3 and QDiabetes do. Death is a competing
-- risk: docs/models.md says what that means for the estimates and for the elderly.
with parameters as (
    select index_date, index_date + to_years(horizon_years) as horizon_end
    from features.parameters, labels.parameters
),

coded_after as (
    select
        e.patient_id,
        c.concept,
        min(e.date) as first_date
    from main.clinical_events as e
    join ref.codelist_codes as c on c.code = e.snomedct_code
    cross join parameters as p
    where c.concept in ('chd', 'mi', 'stroke', 'tia', 'diabetes_type2', 'hypertension')
      and e.date > p.index_date
      and e.date <= p.horizon_end
    group by e.patient_id, c.concept
),

firsts as (
    select
        patient_id,
        min(first_date) filter (where concept in ('chd', 'mi', 'stroke', 'tia')) as cvd_date,
        min(first_date) filter (where concept = 'diabetes_type2') as t2d_date,
        min(first_date) filter (where concept = 'hypertension') as hypertension_date
    from coded_after
    group by patient_id
),

registration_end as (
    select
        r.patient_id,
        case when bool_or(r.end_date is null) then null else max(r.end_date) end as left_date
    from main.practice_registrations as r
    cross join parameters as p
    where r.end_date is null or r.end_date > p.index_date
    group by r.patient_id
),

followup as (
    select
        f.patient_id,
        least(p.horizon_end, pt.date_of_death, r.left_date) as end_date,
        case
            when pt.date_of_death <= least(p.horizon_end, r.left_date) then 'died'
            when r.left_date < p.horizon_end then 'left practice'
            else 'horizon'
        end as followup_end_reason
    from marts.mart_patient_features as f
    cross join parameters as p
    left join main.patients as pt using (patient_id)
    left join registration_end as r using (patient_id)
),

final as (
    select
        f.patient_id,
        case when not f.cvd then coalesce(o.cvd_date <= u.end_date, false) end as cvd_event,
        case when not (f.type1_diabetes or f.type2_diabetes) then coalesce(o.t2d_date <= u.end_date, false) end as t2d_event,
        case when not f.hypertension then coalesce(o.hypertension_date <= u.end_date, false) end as hypertension_event,
        case when not f.cvd then
            date_diff('day', p.index_date, least(o.cvd_date, u.end_date)) / 365.25 end as cvd_followup_years,
        case when not (f.type1_diabetes or f.type2_diabetes) then
            date_diff('day', p.index_date, least(o.t2d_date, u.end_date)) / 365.25 end as t2d_followup_years,
        case when not f.hypertension then
            date_diff('day', p.index_date, least(o.hypertension_date, u.end_date)) / 365.25
        end as hypertension_followup_years,
        u.followup_end_reason
    from marts.mart_patient_features as f
    cross join parameters as p
    left join firsts as o using (patient_id)
    left join followup as u using (patient_id)
)

select * from final
