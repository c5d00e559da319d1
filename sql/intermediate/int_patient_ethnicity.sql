-- int_patient_ethnicity: one row per patient with an ethnicity code on or before the index date.
--
-- ethnicity_category: the NHS letter (A-S) of the latest code that is not 'Z' (not stated);
-- 'Z' when the only codes say not stated; patients with no code at all, or only codes that carry
-- no category ('Ethnic group not recorded', 'Unknown racial group', heading codes: category '99'
-- in the codelist), are not in this table (the mart calls them '99', not known). Same-day
-- codes of different categories: the alphabetically last letter wins, so the result does not
-- depend on row order; the conflict flag still records them.
-- has_conflicting_codes: codes of more than one A-S category, ever (up to the index date).
with parameters as (
    select index_date from features.parameters
),

coded as (
    select e.patient_id, e.date, c.category
    from main.clinical_events as e
    join ref.codelist_codes as c
      on c.concept = 'ethnicity' and c.code = e.snomedct_code
    cross join parameters as p
    where e.date <= p.index_date
      and c.category <> '99'
),

stated as (
    select
        patient_id,
        arg_max(category, date::varchar || category) as latest_category,
        count(distinct category) > 1 as has_conflicting_codes
    from coded
    where category <> 'Z'
    group by patient_id
),

final as (
    select
        coded.patient_id,
        coalesce(any_value(stated.latest_category), 'Z') as ethnicity_category,
        coalesce(any_value(stated.has_conflicting_codes), false) as has_conflicting_codes
    from coded
    left join stated using (patient_id)
    group by coded.patient_id
)

select * from final
