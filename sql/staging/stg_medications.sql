-- stg_medications: one row per row of the medications file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order.
-- Identifiers go through phm_whole_number (macros.sql): never coerced; <column>_excel_notation
-- marks an id Excel wrote as 8.3E+11 (the ingest stops).
select
    phm_whole_number(patient_id) as patient_id,
    phm_excel_notation(patient_id) as patient_id_excel_notation,
    try_cast(date as date) as date,
    trim(cast(dmd_code as varchar)) as dmd_code
from raw_source
