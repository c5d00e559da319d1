-- outcomes: one row per patient in marts.mart_patient_features (built for a past index date),
-- whether each outcome was first recorded in (index date, index date + horizon].
--
-- Only patients free of the outcome at the index date are at risk: incident CVD (CHD, MI,
-- stroke, TIA) for those without CVD; new type 2 diabetes for those without diabetes; new
-- hypertension for those without a current hypertension diagnosis. Others get null (not at
-- risk), never false. These are recorded outcomes: a group whose diagnoses go unrecorded looks
-- healthier here than it is, which is what the fairness audit looks for.
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

final as (
    select
        f.patient_id,
        case when not f.cvd then o.cvd_date is not null end as cvd_event,
        case when not (f.type1_diabetes or f.type2_diabetes) then o.t2d_date is not null end as t2d_event,
        case when not f.hypertension then o.hypertension_date is not null end as hypertension_event
    from marts.mart_patient_features as f
    left join firsts as o using (patient_id)
)

select * from final
