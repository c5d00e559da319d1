-- stg_practice_registrations: one row per row of the registrations file, cast to contract types.
select
    rowid + 1 as source_row,
    try_cast(patient_id as bigint) as patient_id,
    try_cast(start_date as date) as start_date,
    try_cast(end_date as date) as end_date,
    try_cast(practice_pseudo_id as bigint) as practice_pseudo_id
from raw.practice_registrations
