-- stg_practices: one row per row of the practices file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order.
-- Identifiers go through phm_whole_number (macros.sql): never coerced; <column>_excel_notation
-- marks an id Excel wrote as 8.3E+11 (the ingest stops).
select
    phm_whole_number(practice_pseudo_id) as practice_pseudo_id,
    phm_excel_notation(practice_pseudo_id) as practice_pseudo_id_excel_notation,
    nullif(trim(cast(pcn_code as varchar)), '') as pcn_code,
    nullif(trim(cast(pcn_name as varchar)), '') as pcn_name,
    nullif(trim(cast(icb_code as varchar)), '') as icb_code,
    -- optional columns: the loader reads a file without them as empty (null)
    nullif(trim(cast(ods_code as varchar)), '') as ods_code,
    nullif(trim(cast(practice_name as varchar)), '') as practice_name
from raw_source
