-- stg_medications: one row per row of the medications file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order.
select
    try_cast(patient_id as bigint) as patient_id,
    try_cast(date as date) as date,
    trim(cast(dmd_code as varchar)) as dmd_code
from raw_source
