-- mart_patient_features: one row per patient registered and alive at the index date.
--
-- What models, scores, the fairness audit and the lists read. Ethnicity: the NHS category
-- letter, 'Z' (not stated) or '99' (not known: no code); broad group in the 5-group scheme with
-- 'Not stated' and 'Not known' as their own groups; ethnicity_source says where a category came
-- from ('primary_care', 'hospital' where only hospital records state one; null for '99');
-- ethnicity_non_census_only and ethnicity_hospital_category feed the ethnicity data-quality report
-- (int_patient_ethnicity.sql). Eligibility: QRISK3 for ages 25-84 without
-- CVD; QDiabetes for ages 25-84 without diabetes. Outreach is inappropriate for people in
-- palliative care (and, where configured, in care homes): flagged here, applied by the lists;
-- so are the states practices record (statin declined or unsuitable, NHS Health Check done,
-- coded non-diabetic hyperglycaemia: intermediate.int_patient_care_states).
with final as (
    select
        r.patient_id,
        r.sex,
        r.age_years,
        r.practice_pseudo_id,
        r.pcn_code,
        r.icb_code,
        coalesce(e.ethnicity_category, '99') as ethnicity_category,
        ec.broad_group as ethnicity_group,
        ec.qrisk3_ethrisk,
        coalesce(e.has_conflicting_codes, false) as ethnicity_has_conflicting_codes,
        e.ethnicity_source,
        coalesce(e.non_census_only, false) as ethnicity_non_census_only,
        e.hospital_category as ethnicity_hospital_category,
        d.imd_version,
        d.imd_decile,
        d.imd_quintile,
        d.core20,
        d.townsend_score,
        coalesce(d.townsend_is_approximated, false) as townsend_is_approximated,
        m.bmi, m.bmi_date,
        m.sbp_mmhg, m.sbp_date, m.sbp_sd_5y,
        m.dbp_mmhg, m.dbp_date,
        m.cholesterol_ratio, m.cholesterol_ratio_date,
        coalesce(m.cholesterol_ratio_is_derived, false) as cholesterol_ratio_is_derived,
        m.hba1c_mmol_mol, m.hba1c_date,
        m.fasting_glucose_mmol_l, m.fasting_glucose_date,
        s.smoke_cat,
        c.* exclude (patient_id),
        cs.statin_exclusion,
        coalesce(cs.nhs_health_check_5y, false) as nhs_health_check_5y,
        coalesce(cs.ndh_coded, false) as ndh_coded,
        r.age_years between 25 and 84 and not c.cvd as qrisk3_eligible,
        r.age_years between 25 and 84 and not (c.type1_diabetes or c.type2_diabetes) as qdiabetes_eligible
    from intermediate.int_patients_registered as r
    left join intermediate.int_patient_ethnicity as e using (patient_id)
    left join ref.ethnic_categories as ec on ec.category = coalesce(e.ethnicity_category, '99')
    left join intermediate.int_patient_deprivation as d using (patient_id)
    left join intermediate.int_patient_measurements as m using (patient_id)
    left join intermediate.int_patient_smoking as s using (patient_id)
    left join intermediate.int_patient_conditions as c using (patient_id)
    left join intermediate.int_patient_care_states as cs using (patient_id)
)

select * from final
