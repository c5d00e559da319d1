-- list_reasons: every reason a registered patient could be invited, one row per patient and reason.
--
-- Read by phm/lists.py, which applies exclusions, capacity and prioritisation. Nothing is
-- dropped here: a reason that a treatment makes moot keeps its row with excluded_by set, so the
-- per-PCN summary can count it. Thresholds come from lists.parameters (bound by the caller).
-- Risks are written as bands (phm_risk_band, sql/lists/macros.sql), never exactly: the reason text
-- goes out on the list, and an exact risk there would link lists made under two keys.
--
-- Reasons, tier (1 = act first) and suggested action:
--   bp_urgent               1  no hypertension diagnosis, latest reading >= 180/120 in 12 months: urgent BP review
--   hba1c_diabetic_range    1  no diabetes diagnosis, latest HbA1c >= 48 mmol/mol: repeat HbA1c
--   glucose_diabetic_range  1  no diabetes diagnosis, latest fasting glucose >= 7.0 mmol/L: repeat test
--                              (NICE NG28 / WHO: possible undiagnosed diabetes)
--   bp_confirmed_not_coded  2  no diagnosis, ABPM/home mean >= 135/85 in 12 months: code and review (NG136)
--   bp_possible_undiagnosed 2  no diagnosis, last two readings >= 140/90 in 12 months: BP check (home/ambulatory)
--   bp_above_target         2  hypertension, latest reading above the CVDPREVENT target: hypertension review
--   qrisk3_high             2  QRISK3 >= qrisk3_high (20%) and no statin: lipid review (NICE NG238)
--   ndh_ndpp                2  no diabetes and non-diabetic hyperglycaemia: HbA1c 42-47 mmol/mol or fasting
--                              glucose 5.5-6.9 mmol/L in the last 12 months, or a coded NDH (NHS DPP
--                              eligibility; NICE PH38): NHS DPP referral. Tier 1 with a history of
--                              gestational diabetes (NICE PH38, NG3: the highest risk of progression).
--   qrisk3_raised           3  QRISK3 >= qrisk3_threshold (10%) and no statin: lipid review
--   qdiabetes_high          3  QDiabetes >= qdiabetes_threshold (10%): HbA1c test and diabetes prevention advice
--   bp_no_recent_reading    3  hypertension, no reading in 12 months: BP check
--   bp_none_in_5_years      3  aged 45+, no reading in 5 years: BP check
--   model_high_risk         3  a trained model's risk in the top model_top_share of eligible patients
--                              (written as a band of risk, as QRISK3 and QDiabetes are; where do no
--                              harm put QRISK3 or QDiabetes in the model's place, the reason names it)
-- excluded_by (reason level; the reason is kept, set aside, and counted), as QOF, CVDPREVENT and
-- NCL's LTC LCS use them:
--   lipid reasons, and the   already on a statin; statin allergy, contraindicated, not tolerated,
--   CVD model's reason       not indicated (ever), declined (in 5 years): int_patient_care_states
--   bp_possible_undiagnosed  ABPM or home monitoring already done in the 12 months (NG136's next step)
--   bp_none_in_5_years,      an NHS Health Check in the last 5 years (it measures BP and assesses
--   qdiabetes_high           diabetes risk)
-- Already referred to the NHS DPP cannot be recognised: no national NDPP-referral list exists
-- (docs/features.md).
-- share of the model's eligible patients at or above this risk (ties share a place), windowed
-- over the ids and risks alone: over the wide rows of `patients` each window sorted every
-- column with them (1.5-1.8 s each at 1M patients, against 0.2 s; docs/benchmarks.md)
with model_tops as (
    select r.patient_id,
        case when r.cvd_model_risk is not null then cume_dist() over (
            partition by r.cvd_model_risk is null order by r.cvd_model_risk desc) end as cvd_model_top,
        case when r.t2d_model_risk is not null then cume_dist() over (
            partition by r.t2d_model_risk is null order by r.t2d_model_risk desc) end as t2d_model_top,
        case when r.hypertension_model_risk is not null then cume_dist() over (
            partition by r.hypertension_model_risk is null order by r.hypertension_model_risk desc) end
            as hypertension_model_top
    from marts.mart_patient_features as f
    inner join marts.risk_scores as r using (patient_id)
),

parameters as (
    select l.*, f.index_date from lists.parameters as l cross join features.parameters as f
),

patients as (
    select
        f.patient_id, f.age_years, f.type1_diabetes or f.type2_diabetes as diabetes, f.on_statins,
        f.hba1c_mmol_mol, s.qrisk3_10y_pct, s.qdiabetes_10y_pct,
        f.hba1c_date > pr.index_date - interval 12 month and f.hba1c_mmol_mol >= 42 and f.hba1c_mmol_mol < 48
            as hba1c_ndh_12m,
        f.fasting_glucose_mmol_l,
        f.fasting_glucose_date > pr.index_date - interval 12 month and f.fasting_glucose_mmol_l >= 5.5
            and f.fasting_glucose_mmol_l < 7.0 as glucose_ndh_12m,
        f.ndh_coded, f.gestational_diabetes, f.nhs_health_check_5y,
        case when f.on_statins then 'already on a statin'
             when f.statin_exclusion = 'allergic' then 'statin allergy'
             when f.statin_exclusion = 'contraindicated' then 'statin contraindicated'
             when f.statin_exclusion = 'not_tolerated' then 'statin not tolerated'
             when f.statin_exclusion = 'not_indicated' then 'statin not indicated'
             when f.statin_exclusion = 'declined' then 'statin declined in the last 5 years'
        end as lipid_set_aside,
        h.finding as bp_finding, h.finding_reason as bp_reason, h.monitoring_12_months,
        r.cvd_model_risk, r.t2d_model_risk, r.hypertension_model_risk,
        r.cvd_model_horizon_years, r.t2d_model_horizon_years, r.hypertension_model_horizon_years,
        -- what made the risk: 'model', or the validated score that ranks the list in the trained
        -- model's place (do no harm: models/score_models.py writes its name, version VALIDATED_SCORE)
        case when r.cvd_model_version = 'validated score' then r.cvd_model_name else 'model' end as cvd_ranked_by,
        case when r.t2d_model_version = 'validated score' then r.t2d_model_name else 'model' end as t2d_ranked_by,
        case when r.hypertension_model_version = 'validated score' then r.hypertension_model_name else 'model' end
            as hypertension_ranked_by,
        t.cvd_model_top, t.t2d_model_top, t.hypertension_model_top
    from marts.mart_patient_features as f
    left join marts.patient_scores as s using (patient_id)
    left join marts.mart_hypertension_case_finding as h using (patient_id)
    left join marts.risk_scores as r using (patient_id)
    left join model_tops as t using (patient_id)
    cross join parameters as pr
),

-- one row per patient and model, so the model reason is written once (three selects, not a lateral
-- join of values: DuckDB decorrelates that into a join of 2.7M rows, 1.5 s at 1M patients)
model_risks as (
    select patient_id, lipid_set_aside, 'cvd' as outcome, cvd_model_risk as risk, cvd_model_top as top_share,
           cvd_model_horizon_years as horizon, cvd_ranked_by as ranked_by, 'a CVD event' as what,
           'cardiovascular risk review' as action
    from patients
    union all
    select patient_id, lipid_set_aside, 't2d', t2d_model_risk, t2d_model_top, t2d_model_horizon_years, t2d_ranked_by,
           'type 2 diabetes', 'HbA1c test and diabetes prevention advice'
    from patients
    union all
    select patient_id, lipid_set_aside, 'hypertension', hypertension_model_risk, hypertension_model_top,
           hypertension_model_horizon_years, hypertension_ranked_by, 'a hypertension diagnosis', 'blood pressure check'
    from patients
),

reasons as (
    select patient_id, 'bp_urgent' as reason_code, 1 as tier, 'hypertension' as outcome, bp_reason as reason,
           'urgent blood pressure review (same day if symptomatic)' as action, null as excluded_by
    from patients where bp_finding = 'possible_undiagnosed_urgent'
    union all
    select patient_id, 'bp_confirmed_not_coded', 2, 'hypertension', bp_reason,
           'code the hypertension diagnosis and review treatment', null
    from patients where bp_finding = 'confirmed_not_coded'
    union all
    select patient_id, 'bp_possible_undiagnosed', 2, 'hypertension', bp_reason,
           'blood pressure check, confirmed with home or ambulatory readings',
           case when monitoring_12_months then 'ABPM or home blood pressure already done' end
    from patients where bp_finding = 'possible_undiagnosed'
    union all
    select patient_id, 'bp_above_target', 2, 'hypertension', bp_reason,
           'hypertension review: treatment optimisation', null
    from patients where bp_finding = 'above_target'
    union all
    select patient_id, 'bp_no_recent_reading', 3, 'hypertension', bp_reason, 'blood pressure check', null
    from patients where bp_finding = 'no_recent_reading'
    union all
    select patient_id, 'bp_none_in_5_years', 3, 'hypertension', bp_reason, 'blood pressure check',
           case when nhs_health_check_5y then 'NHS Health Check in the last 5 years' end
    from patients where bp_finding = 'no_bp_in_5_years'
    union all
    select patient_id, 'hba1c_diabetic_range', 1, 't2d',
           'latest HbA1c ' || round(hba1c_mmol_mol)::integer || ' mmol/mol (48 or over) and no diabetes diagnosis',
           'repeat HbA1c: possible undiagnosed diabetes', null
    from patients where not diabetes and hba1c_mmol_mol >= 48
    union all
    select patient_id, 'glucose_diabetic_range', 1, 't2d',
           'latest fasting glucose ' || round(fasting_glucose_mmol_l, 1) || ' mmol/L (7.0 or over) and no diabetes diagnosis',
           'repeat fasting glucose or HbA1c: possible undiagnosed diabetes', null
    from patients where not diabetes and fasting_glucose_mmol_l >= 7.0
    union all
    select patient_id, 'ndh_ndpp', case when gestational_diabetes then 1 else 2 end, 't2d',
           concat_ws(', ',
               -- truncated, not rounded: 47.6 rounded to '48 mmol/mol ... (42-47)' and 6.96 to '7.0 mmol/L ...
               -- (5.5-6.9)', a value in the diabetic range on a reason that says it is not (a tiny
               -- margin keeps 6.3, stored as 6.29999..., from reading as 6.2)
               case when hba1c_ndh_12m then 'HbA1c ' || floor(hba1c_mmol_mol + 1e-9)::integer || ' mmol/mol in the last 12 months (42-47)' end,
               case when glucose_ndh_12m then 'fasting glucose ' || (floor(fasting_glucose_mmol_l * 10 + 1e-9) / 10)::decimal(4, 1) || ' mmol/L in the last 12 months (5.5-6.9)' end,
               case when ndh_coded then 'non-diabetic hyperglycaemia coded' end,
               case when gestational_diabetes then 'history of gestational diabetes' end)
               || ': non-diabetic hyperglycaemia',
           'NHS Diabetes Prevention Programme referral', null
    from patients
    where not diabetes and (hba1c_ndh_12m or glucose_ndh_12m or ndh_coded)
    union all
    select pt.patient_id, 'qrisk3_high', 2, 'cvd',
           'QRISK3 10-year risk ' || phm_risk_band(pt.qrisk3_10y_pct, p.risk_band_edges, p.risk_band_labels)
               || ' (' || printf('%g', p.qrisk3_high) || '% or over)',
           'lipid review: discuss a statin (NICE NG238)', pt.lipid_set_aside
    from patients as pt cross join parameters as p where pt.qrisk3_10y_pct >= p.qrisk3_high
    union all
    select pt.patient_id, 'qrisk3_raised', 3, 'cvd',
           'QRISK3 10-year risk ' || phm_risk_band(pt.qrisk3_10y_pct, p.risk_band_edges, p.risk_band_labels)
               || ' (' || printf('%g', p.qrisk3_threshold) || '% or over)',
           'lipid review: discuss a statin (NICE NG238)', pt.lipid_set_aside
    from patients as pt cross join parameters as p
    where pt.qrisk3_10y_pct >= p.qrisk3_threshold and pt.qrisk3_10y_pct < p.qrisk3_high
    union all
    select pt.patient_id, 'qdiabetes_high', 3, 't2d',
           'QDiabetes 10-year risk ' || phm_risk_band(pt.qdiabetes_10y_pct, p.risk_band_edges, p.risk_band_labels)
               || ' (' || printf('%g', p.qdiabetes_threshold) || '% or over)',
           'HbA1c test and diabetes prevention advice',
           case when pt.nhs_health_check_5y then 'NHS Health Check in the last 5 years' end
    from patients as pt cross join parameters as p where pt.qdiabetes_10y_pct >= p.qdiabetes_threshold
    union all
    select m.patient_id, 'model_high_risk', 3, m.outcome,
           'predicted risk of ' || m.what || ' in the next ' || m.horizon || ' years: '
               || phm_risk_band(100 * m.risk, p.risk_band_edges, p.risk_band_labels)
               || ' (' || m.ranked_by || ', top ' || round(100 * p.model_top_share)::integer || '%)',
           m.action,
           -- a CVD risk, the model's or QRISK3 in its place, is the lipid reasons' question again: set
           -- aside as they are (on a statin, or one declined, not indicated, ...), or a statin user
           -- whose QRISK3 reason was set aside came back through the model's
           case when m.outcome = 'cvd' then m.lipid_set_aside end
    from model_risks as m cross join parameters as p where m.top_share <= p.model_top_share
)

select * from reasons
