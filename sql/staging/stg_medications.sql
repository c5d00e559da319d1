-- stg_medications: one row per row of the medications file, cast to contract types.
select
    rowid + 1 as source_row,
    try_cast(patient_id as bigint) as patient_id,
    try_cast(date as date) as date,
    trim(dmd_code) as dmd_code
from raw.medications
