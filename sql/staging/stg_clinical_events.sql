-- stg_clinical_events: one row per row of the clinical_events file, cast to contract types.
select
    rowid + 1 as source_row,
    try_cast(patient_id as bigint) as patient_id,
    try_cast(date as date) as date,
    trim(snomedct_code) as snomedct_code,
    try_cast(numeric_value as double) as numeric_value
from raw.clinical_events
