-- ethnicity_reask: one row per registered patient whose ethnicity a practice could ask again, with
-- why. Better ethnicity recording comes first in every report this project answers to (NHS Race
-- and Health Observatory, 2021; OpenSAFELY, BMC Med 2024;22:288): QRISK3 and QDiabetes take a
-- patient with no recorded ethnicity as White (ClinRisk), and the fairness audit cannot see a
-- group its records do not name. Asking is voluntary, and 'not stated' (Z) is a valid answer.
--   no_ethnicity_recorded: no code states a category or 'not stated' (the mart's '99');
--   conflicting_codes: codes of more than one census category (int_patient_ethnicity);
--   any_other_category: only an 'any other ...' category (C, G, L, P, S), where a specific
--     category may fit (the 2021 census added write-in options for some of them);
--   not_stated_long_ago: 'not stated' (Z), the latest 'not stated' code before the re-ask window
--     (lists.reask_parameters.not_stated_days: never asked again within it).
-- Adults only (18 and over): everyone a list's reason can apply to.
-- scored: QRISK3 or QDiabetes was computed for the patient (marts.patient_scores), so for one with
--   no ethnicity recorded a score read them as White; for the others (under 25 or over 84, or
--   the conditions already recorded) no score did, and the worklist does not say it did.
-- Bound parameters: lists.reask_parameters (not_stated_days); the index date from features.
with parameters as (
    select f.index_date, r.not_stated_days
    from features.parameters as f
    cross join lists.reask_parameters as r
),

last_not_stated as (
    select e.patient_id, max(e.date) as last_not_stated
    from main.clinical_events as e
    join ref.codelist_codes as c
      on c.concept = 'ethnicity' and c.code = e.snomedct_code and c.category = 'Z'
    cross join parameters as p
    where e.date <= p.index_date
    group by e.patient_id
)

select
    m.patient_id,
    m.practice_pseudo_id,
    m.pcn_code,
    case
        when m.ethnicity_category = '99' then 'no_ethnicity_recorded'
        when m.ethnicity_has_conflicting_codes then 'conflicting_codes'
        when m.ethnicity_category in ('C', 'G', 'L', 'P', 'S') then 'any_other_category'
        else 'not_stated_long_ago'
    end as reask_reason,
    coalesce(s.qrisk3_10y_pct is not null or s.qdiabetes_10y_pct is not null, false) as scored
from marts.mart_patient_features as m
left join last_not_stated as z using (patient_id)
left join marts.patient_scores as s using (patient_id)
cross join parameters as p
where m.age_years >= 18
  and (m.ethnicity_category = '99'
   or m.ethnicity_has_conflicting_codes
   or m.ethnicity_category in ('C', 'G', 'L', 'P', 'S')
   or (m.ethnicity_category = 'Z' and z.last_not_stated < p.index_date - p.not_stated_days))
