-- stg_clinical_events: one row per row of the clinical_events file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order.
-- Identifiers go through phm_whole_number (macros.sql): never coerced; <column>_excel_notation
-- marks an id Excel wrote as 8.3E+11 (the ingest stops).
-- <column>_unparsed marks an optional value that was given but could not be cast.
select
    phm_whole_number(patient_id) as patient_id,
    phm_excel_notation(patient_id) as patient_id_excel_notation,
    try_cast(date as date) as date,
    trim(cast(snomedct_code as varchar)) as snomedct_code,
    try_cast(numeric_value as double) as numeric_value,
    numeric_value is not null and try_cast(numeric_value as double) is null as numeric_value_unparsed
from raw_source
