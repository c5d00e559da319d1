-- stg_clinical_events: one row per row of the clinical_events file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order.
-- <column>_unparsed marks an optional value that was given but could not be cast.
select
    try_cast(patient_id as bigint) as patient_id,
    try_cast(date as date) as date,
    trim(cast(snomedct_code as varchar)) as snomedct_code,
    try_cast(numeric_value as double) as numeric_value,
    numeric_value is not null and try_cast(numeric_value as double) is null as numeric_value_unparsed
from raw_source
