-- stg_practice_registrations: one row per row of the registrations file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order.
-- <column>_unparsed marks an optional value that was given but could not be cast.
select
    try_cast(patient_id as bigint) as patient_id,
    try_cast(start_date as date) as start_date,
    try_cast(end_date as date) as end_date,
    end_date is not null and try_cast(end_date as date) is null as end_date_unparsed,
    try_cast(practice_pseudo_id as bigint) as practice_pseudo_id
from raw_source
