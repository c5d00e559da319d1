-- stg_patients: one row per row of the patients file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order.
-- Identifiers go through phm_whole_number (macros.sql): never coerced; <column>_excel_notation
-- marks an id Excel wrote as 8.3E+11 (the ingest stops).
-- <column>_unparsed marks an optional value that was given but could not be cast.
select
    phm_whole_number(patient_id) as patient_id,
    phm_excel_notation(patient_id) as patient_id_excel_notation,
    lower(trim(cast(sex as varchar))) as sex,
    try_cast(date_of_birth as date) as date_of_birth,
    try_cast(date_of_death as date) as date_of_death,
    date_of_death is not null and try_cast(date_of_death as date) is null as date_of_death_unparsed
from raw_source
