-- stg_medications: one row per row of the medications file, cast to contract types.
-- raw_source is the file as the loader provides it, with source_row = the 1-based data row.
select
    source_row,
    try_cast(patient_id as bigint) as patient_id,
    try_cast(date as date) as date,
    trim(cast(dmd_code as varchar)) as dmd_code
from raw_source
