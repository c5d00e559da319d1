-- stg_patients: one row per row of the patients file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order.
-- <column>_unparsed marks an optional value that was given but could not be cast.
select
    try_cast(patient_id as bigint) as patient_id,
    lower(trim(cast(sex as varchar))) as sex,
    try_cast(date_of_birth as date) as date_of_birth,
    try_cast(date_of_death as date) as date_of_death,
    date_of_death is not null and try_cast(date_of_death as date) is null as date_of_death_unparsed
from raw_source
