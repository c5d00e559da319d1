-- int_patient_smoking: one row per patient with a smoking code on or before the index date.
--
-- The latest code decides, in QRISK3's coding: 0 never, 1 ex, 2 light (<10/day), 3 moderate
-- (10-19), 4 heavy (20+). A current smoker with the amount unknown counts as moderate (3), the
-- middle of the current categories. An 'ex' code after years of 'never' is ex; a 'never' code
-- after any smoking code is taken as ex (people who smoked do not become never-smokers).
-- Same-day codes: the highest category.
with parameters as (
    select index_date from features.parameters
),

-- the codes read here with the index date: the events are joined on their code alone (DuckDB
-- then skips other codes while it reads them), the date compared after
codes as (
    select c.code, c.category, p.index_date
    from ref.codelist_codes as c
    cross join parameters as p
    where c.concept = 'smoking'
),

coded as (
    select
        e.patient_id,
        e.date,
        case c.category
            when 'never' then 0 when 'ex' then 1 when 'light' then 2 when 'moderate' then 3
            when 'heavy' then 4 when 'current_amount_unknown' then 3
        end as smoke_cat
    from main.clinical_events as e
    join codes as c on c.code = e.snomedct_code
    where e.date <= c.index_date
),

final as (
    select
        patient_id,
        case when arg_max(smoke_cat, (date, smoke_cat)) = 0 and max(smoke_cat) > 0 then 1
             else arg_max(smoke_cat, (date, smoke_cat)) end as smoke_cat,
        max(date) as smoking_date
    from coded
    group by patient_id
)

select * from final
