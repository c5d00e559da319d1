-- int_patient_conditions: one row per registered patient with every condition, treatment and
-- family-history input of QRISK3 and QDiabetes, as of the index date.
--
-- Conditions: a code on or before the index date, ever, except where a rule below says more.
-- Hypertension: a diagnosis not followed by a later 'resolved' code (QOF HYP_COD, HYPRES_COD).
-- Diabetes: any diabetes code (QOF DM_COD and the type refsets); type 1 where a type 1 code is
-- recorded, otherwise type 2 (QRISK3 and QDiabetes know only these two; CVDPREVENT counts
-- unspecified diabetes with type 2). CKD 3-5: intermediate.int_patient_ckd (latest stage code,
-- else eGFR). Severe mental illness: any MH_COD / SEV_MENTAL code, ever, is QRISK3's input
-- (a history of the diagnosis); smi_in_remission when the latest such code is an 'in
-- remission' code (QOF MH register rule), and long_term_conditions then does not count it.
-- Erectile dysfunction: a diagnosis code (QRISK3 also counts treatment; no national PDE5
-- inhibitor list exists: docs/features.md). Palliative care: the latest palliative care code is
-- not followed by a 'palliative care not clinically indicated' code (QOF PALCARE_COD,
-- PALCARENI_COD). Treatments: antihypertensives, statins, non-insulin glucose-lowering drugs
-- (BNF 6.1.2) and antiplatelets (BNF 2.9: low-dose aspirin, clopidogrel, prasugrel, ticagrelor,
-- dipyridamole; OpenCodelists opensafely/antiplatelets) issued at least once in the 6 months
-- before the index date. The last two are no score's input: the fairness gate's "treated without
-- a diagnosis" searches (metformin with no diabetes code; secondary-prevention antiplatelets with
-- no CHD, MI, stroke or TIA code, as CVDPREVENT and QOF register validation search). Atypical antipsychotics and corticosteroids (oral
-- glucocorticoids) as QRISK3 defines 'regular' use (QRISK3-2017, Hippisley-Cox et al., BMJ
-- 2017;357:j2099, and ClinRisk's input definitions): at least two issues, the latest no more
-- than 28 days before the index date; the issues counted are those of the 6 months before it
-- (one course is not regular use; a treatment stopped a month ago is not current). Treated hypertension:
-- diagnosed hypertension and on antihypertensives. Palliative care: coded ever; care home: the
-- latest residence code in 2 years. long_term_conditions counts hypertension, diabetes (either
-- type), CVD, AF, CKD 3-5, RA, SLE, severe mental illness and learning disability: a measure of
-- need used by the fairness audit.
with parameters as (
    select index_date, cast(index_date - interval 6 month as date) as six_months_before
    from features.parameters
),

-- the codes read here with the index date: the events are joined on their code alone (DuckDB
-- then skips other codes while it reads them), the date compared after
codes as (
    select c.code, c.concept, c.category, p.index_date
    from ref.codelist_codes as c
    cross join parameters as p
    where c.concept in ('hypertension', 'hypertension_resolved', 'diabetes', 'diabetes_type1',
                        'diabetes_type2', 'chd', 'mi', 'stroke', 'tia', 'atrial_fibrillation',
                        'rheumatoid_arthritis', 'sle', 'migraine', 'severe_mental_illness',
                        'erectile_dysfunction', 'family_history_cvd', 'family_history_diabetes',
                        'gestational_diabetes', 'pcos', 'learning_disability', 'palliative_care',
                        'palliative_care_not_indicated', 'care_home')
),

events as (
    select e.patient_id, e.date, c.concept, c.category
    from main.clinical_events as e
    join codes as c on c.code = e.snomedct_code
    where e.date <= c.index_date
),

coded as (
    select
        patient_id,
        max(date) filter (where concept = 'hypertension') as last_hypertension,
        max(date) filter (where concept = 'hypertension_resolved') as last_resolved,
        bool_or(concept = 'diabetes_type1') as type1_diabetes,
        bool_or(concept in ('diabetes', 'diabetes_type2')) as any_diabetes,
        bool_or(concept in ('chd', 'mi', 'stroke', 'tia')) as cvd,
        bool_or(concept = 'atrial_fibrillation') as atrial_fibrillation,
        bool_or(concept = 'rheumatoid_arthritis') as rheumatoid_arthritis,
        bool_or(concept = 'sle') as sle,
        bool_or(concept = 'migraine') as migraine,
        bool_or(concept = 'severe_mental_illness') as severe_mental_illness,
        arg_max(category, (date, category)) filter (where concept = 'severe_mental_illness') = 'remission'
            as smi_in_remission,
        bool_or(concept = 'erectile_dysfunction') as erectile_dysfunction,
        bool_or(concept = 'family_history_cvd') as family_history_cvd,
        bool_or(concept = 'family_history_diabetes') as family_history_diabetes,
        bool_or(concept = 'gestational_diabetes') as gestational_diabetes,
        bool_or(concept = 'pcos') as pcos,
        bool_or(concept = 'learning_disability') as learning_disability,
        max(date) filter (where concept = 'palliative_care') as last_palliative_care,
        max(date) filter (where concept = 'palliative_care_not_indicated') as last_palliative_not_indicated,
        max(date) filter (where concept = 'care_home') as last_care_home
    from events
    group by patient_id
),

issued as (
    select
        m.patient_id,
        count(*) filter (where c.concept = 'antihypertensives') as antihypertensive_issues,
        count(*) filter (where c.concept = 'statins') as statin_issues,
        count(*) filter (where c.concept = 'glucose_lowering') as glucose_lowering_issues,
        count(*) filter (where c.concept = 'antiplatelets') as antiplatelet_issues,
        count(*) filter (where c.concept = 'corticosteroids') as corticosteroid_issues,
        count(*) filter (where c.concept = 'atypical_antipsychotics') as antipsychotic_issues,
        max(m.date) filter (where c.concept = 'corticosteroids') as last_corticosteroid,
        max(m.date) filter (where c.concept = 'atypical_antipsychotics') as last_antipsychotic
    from main.medications as m
    -- the run's dates travel with the codes, as for the events above
    join (select c.code, c.concept, p.index_date, p.six_months_before
          from ref.codelist_codes as c
          cross join parameters as p) as c on c.code = m.dmd_code
    where m.date <= c.index_date and m.date > c.six_months_before
    group by m.patient_id
),

flags as (
    select
        r.patient_id,
        coalesce(c.last_hypertension > coalesce(c.last_resolved, date '1900-01-01'), false) as hypertension,
        coalesce(c.type1_diabetes, false) as type1_diabetes,
        coalesce(c.any_diabetes and not c.type1_diabetes, false) as type2_diabetes,
        coalesce(c.cvd, false) as cvd,
        coalesce(c.atrial_fibrillation, false) as atrial_fibrillation,
        k.ckd_stage is not null as ckd_3_5,
        k.ckd_stage,
        k.ckd_stage_source,
        coalesce(c.rheumatoid_arthritis, false) as rheumatoid_arthritis,
        coalesce(c.sle, false) as sle,
        coalesce(c.migraine, false) as migraine,
        coalesce(c.severe_mental_illness, false) as severe_mental_illness,
        coalesce(c.smi_in_remission, false) as smi_in_remission,
        coalesce(c.erectile_dysfunction, false) as erectile_dysfunction,
        coalesce(c.family_history_cvd, false) as family_history_cvd,
        coalesce(c.family_history_diabetes, false) as family_history_diabetes,
        coalesce(c.gestational_diabetes, false) as gestational_diabetes,
        coalesce(c.pcos, false) as pcos,
        coalesce(c.learning_disability, false) as learning_disability,
        coalesce(c.last_palliative_care > coalesce(c.last_palliative_not_indicated, date '1900-01-01'), false)
            as palliative_care,
        coalesce(c.last_care_home > p.index_date - interval 2 year, false) as care_home,
        coalesce(i.antihypertensive_issues, 0) > 0 as on_antihypertensives,
        coalesce(i.statin_issues, 0) > 0 as on_statins,
        coalesce(i.glucose_lowering_issues, 0) > 0 as on_glucose_lowering,
        coalesce(i.antiplatelet_issues, 0) > 0 as on_antiplatelets,
        coalesce(i.corticosteroid_issues >= 2 and i.last_corticosteroid >= p.index_date - interval 28 day, false)
            as on_corticosteroids,
        coalesce(i.antipsychotic_issues >= 2 and i.last_antipsychotic >= p.index_date - interval 28 day, false)
            as on_atypical_antipsychotics
    from intermediate.int_patients_registered as r
    left join coded as c using (patient_id)
    left join issued as i using (patient_id)
    left join intermediate.int_patient_ckd as k using (patient_id)
    cross join parameters as p
),

final as (
    select
        *,
        hypertension and on_antihypertensives as treated_hypertension,
        hypertension::integer + (type1_diabetes or type2_diabetes)::integer + cvd::integer
            + atrial_fibrillation::integer + ckd_3_5::integer + rheumatoid_arthritis::integer
            + sle::integer + (severe_mental_illness and not smi_in_remission)::integer
            + learning_disability::integer
            as long_term_conditions
    from flags
)

select * from final
