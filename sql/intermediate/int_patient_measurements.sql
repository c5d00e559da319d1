-- int_patient_measurements: one row per patient with any measurement in its look-back window.
--
-- Latest value (and its date) on or before the index date, within a window per measurement:
-- BMI, blood pressure and cholesterol 5 years; HbA1c and fasting glucose 2 years (glycaemic
-- status changes faster). Same-day readings of one measurement: the highest value, so the
-- result does not depend on row order. Measurements taken before age 18 are not used.
-- cholesterol_ratio: the laboratory's ratio when it is the latest lipid result, otherwise total
-- cholesterol / HDL from the latest day on which both were measured (flagged as derived; two
-- results of one of them that day: the highest ratio, so the result does not depend on row order).
-- sbp_sd_5y: standard deviation of systolic readings in the last 5 years (QRISK3's sbps5;
-- needs at least two readings). Taken over the readings in date order: DuckDB otherwise adds
-- them up in whatever order its threads meet them, and the last-bit differences that makes
-- between two runs of one extract reach the models and can reorder a list.
with parameters as (
    select index_date from features.parameters
),

-- each measurement's codes with its look-back window, as dates: the run's dates travel with the
-- codes, so the events are joined on their code alone (DuckDB then skips other codes while it
-- reads them) and each reading's date is compared as it is
codes as (
    select
        c.code,
        c.concept,
        p.index_date,
        cast(p.index_date - case when c.concept in ('hba1c', 'fasting_glucose')
                                 then interval 2 year else interval 5 year end as date) as window_start
    from ref.codelist_codes as c
    cross join parameters as p
    where c.concept in ('bmi', 'systolic_bp', 'diastolic_bp', 'total_cholesterol',
                        'hdl_cholesterol', 'cholesterol_hdl_ratio', 'hba1c', 'fasting_glucose')
),

readings as (
    select
        e.patient_id,
        e.date,
        c.concept,
        e.numeric_value as value
    from main.clinical_events as e
    join codes as c on c.code = e.snomedct_code
    -- the day each patient turns 18, as a date: compared with each reading's date as it is,
    -- not each reading cast to a timestamp
    join (select patient_id, cast(date_of_birth + interval 18 year as date) as adult_from
          from main.patients) as pt using (patient_id)
    where e.numeric_value is not null
      and e.date <= c.index_date
      and e.date > c.window_start
      and e.date >= pt.adult_from
),

derived_ratio as (
    select
        t.patient_id,
        arg_max(t.value / h.value, (t.date, t.value / h.value)) as value,
        max(t.date) as date
    from readings as t
    join readings as h
      on h.patient_id = t.patient_id and h.date = t.date and h.concept = 'hdl_cholesterol'
    where t.concept = 'total_cholesterol' and h.value > 0
    group by t.patient_id
),

sbp_sd as (
    -- stddev_samp's own running (Welford) update, step by step over the readings sorted by date
    -- then value: the same bits as stddev_samp(value order by date, value), at half its cost
    -- (DuckDB's ordered aggregates sort through a slower path than list_sort)
    select
        patient_id,
        sqrt(running.m2 / (running.n - 1)) as sbp_sd_5y
    from (
        select
            patient_id,
            list_reduce(
                list_transform(list_sort(list({'date': date, 'value': value})),
                               r -> {'n': 1.0::double, 'mean': r.value, 'm2': 0.0::double}),
                (s, r) -> {'n': s.n + 1,
                           'mean': s.mean + (r.mean - s.mean) / (s.n + 1),
                           'm2': s.m2 + (r.mean - s.mean) * (r.mean - (s.mean + (r.mean - s.mean) / (s.n + 1)))}
            ) as running
        from readings
        where concept = 'systolic_bp'
        group by patient_id
        having count(*) >= 2
    )
),

-- the latest value of each measurement and its date (same-day readings: the highest), in one pass
-- over the readings: a row for every patient with any reading
wide as (
    select
        patient_id,
        arg_max(value, (date, value)) filter (where concept = 'bmi') as bmi,
        max(date) filter (where concept = 'bmi') as bmi_date,
        arg_max(value, (date, value)) filter (where concept = 'systolic_bp') as sbp_mmhg,
        max(date) filter (where concept = 'systolic_bp') as sbp_date,
        arg_max(value, (date, value)) filter (where concept = 'diastolic_bp') as dbp_mmhg,
        max(date) filter (where concept = 'diastolic_bp') as dbp_date,
        arg_max(value, (date, value)) filter (where concept = 'cholesterol_hdl_ratio') as lab_ratio,
        max(date) filter (where concept = 'cholesterol_hdl_ratio') as lab_ratio_date,
        arg_max(value, (date, value)) filter (where concept = 'hba1c') as hba1c_mmol_mol,
        max(date) filter (where concept = 'hba1c') as hba1c_date,
        arg_max(value, (date, value)) filter (where concept = 'fasting_glucose') as fasting_glucose_mmol_l,
        max(date) filter (where concept = 'fasting_glucose') as fasting_glucose_date
    from readings
    group by patient_id
),

final as (
    select
        w.patient_id,
        w.bmi, w.bmi_date,
        w.sbp_mmhg, w.sbp_date,
        w.dbp_mmhg, w.dbp_date,
        s.sbp_sd_5y,
        case when w.lab_ratio_date >= coalesce(d.date, w.lab_ratio_date) then w.lab_ratio
             else d.value end as cholesterol_ratio,
        case when w.lab_ratio_date >= coalesce(d.date, w.lab_ratio_date) then w.lab_ratio_date
             else d.date end as cholesterol_ratio_date,
        d.value is not null and not coalesce(w.lab_ratio_date >= d.date, false)
            as cholesterol_ratio_is_derived,
        w.hba1c_mmol_mol, w.hba1c_date,
        w.fasting_glucose_mmol_l, w.fasting_glucose_date
    from wide as w
    left join derived_ratio as d using (patient_id)
    left join sbp_sd as s using (patient_id)
)

select * from final
