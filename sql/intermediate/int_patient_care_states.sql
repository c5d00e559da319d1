-- int_patient_care_states: one row per patient with a state or decision a practice records that
-- changes who should be invited, as of the index date.
--
-- statin_exclusion: why a statin is not for this patient, the first that applies of
--   'allergic'         STATALL_COD / XSTAT_COD, ever
--   'contraindicated'  STATCONTR_COD, ever
--   'not_tolerated'    STATINTOL_COD / ARSTAT_COD, ever
--   'not_indicated'    STATNIND_COD, ever
--   'declined'         STATDEC_COD in the 5 years before the index date
-- (QOF CHOL and CVDPREVENT lipid business rules use these clusters as exclusions; the 5-year
-- window for a declined statin is NCL's LTC LCS, after which the offer is made again.)
-- nhs_health_check_5y: an NHS Health Check in the 5 years before the index date (the programme
-- invites every 5 years; NHS Health Check best practice guidance).
-- ndh_coded: a non-diabetic hyperglycaemia (or pre-diabetes, IFG, IGT) code, ever (QOF NDH_COD;
-- NHS DPP eligibility also accepts a coded NDH).
with parameters as (
    select index_date from features.parameters
),

-- the codes read here with the index date: the events are joined on their code alone (DuckDB
-- then skips other codes while it reads them), the date compared after
codes as (
    select c.code, c.concept, c.category, p.index_date
    from ref.codelist_codes as c
    cross join parameters as p
    where c.concept in ('statin_exclusion', 'nhs_health_check', 'non_diabetic_hyperglycaemia')
),

coded as (
    select e.patient_id, e.date, c.concept, c.category
    from main.clinical_events as e
    join codes as c on c.code = e.snomedct_code
    where e.date <= c.index_date
),

final as (
    select
        patient_id,
        case
            when bool_or(concept = 'statin_exclusion' and category = 'allergic') then 'allergic'
            when bool_or(concept = 'statin_exclusion' and category = 'contraindicated') then 'contraindicated'
            when bool_or(concept = 'statin_exclusion' and category = 'not_tolerated') then 'not_tolerated'
            when bool_or(concept = 'statin_exclusion' and category = 'not_indicated') then 'not_indicated'
            when bool_or(concept = 'statin_exclusion' and category = 'declined'
                         and date > p.index_date - interval 5 year) then 'declined'
        end as statin_exclusion,
        bool_or(concept = 'nhs_health_check' and date > p.index_date - interval 5 year) as nhs_health_check_5y,
        bool_or(concept = 'non_diabetic_hyperglycaemia') as ndh_coded
    from coded
    cross join parameters as p
    group by patient_id, p.index_date
)

select * from final
