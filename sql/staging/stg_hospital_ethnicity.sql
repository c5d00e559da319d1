-- stg_hospital_ethnicity: one row per row of the hospital_ethnicity file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order. An extract without the (optional) table is staged
-- with no rows.
-- Identifiers go through phm_whole_number (macros.sql): never coerced; <column>_excel_notation
-- marks an id Excel wrote as 8.3E+11 (the ingest stops).
-- ethnic_category: as given, without surrounding spaces; letters in capitals (SUS sends 'a' as
-- well as 'A'); expectations/hospital_ethnicity.json checks it is an ETHNIC CATEGORY value.
select
    phm_whole_number(patient_id) as patient_id,
    phm_excel_notation(patient_id) as patient_id_excel_notation,
    try_cast(date as date) as date,
    nullif(upper(trim(cast(ethnic_category as varchar))), '') as ethnic_category
from raw_source
