-- stg_patients: one row per row of the patients file, cast to contract types.
select
    rowid + 1 as source_row,
    try_cast(patient_id as bigint) as patient_id,
    lower(trim(sex)) as sex,
    try_cast(date_of_birth as date) as date_of_birth,
    try_cast(date_of_death as date) as date_of_death
from raw.patients
