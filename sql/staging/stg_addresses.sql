-- stg_addresses: one row per row of the addresses file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order.
-- Identifiers go through phm_whole_number (macros.sql): never coerced; <column>_excel_notation
-- marks an id Excel wrote as 8.3E+11 (the ingest stops).
-- <column>_unparsed marks an optional value that was given but could not be cast.
select
    phm_whole_number(patient_id) as patient_id,
    phm_excel_notation(patient_id) as patient_id_excel_notation,
    try_cast(start_date as date) as start_date,
    -- an end after the extract date: the address period is current (macros.sql)
    phm_period_end(end_date, (select extract_date from ingest.run_parameters)) as end_date,
    phm_ends_after_extract(end_date, (select extract_date from ingest.run_parameters))
        as end_date_after_extract,
    end_date is not null and try_cast(end_date as date) is null as end_date_unparsed,
    nullif(upper(trim(cast(lsoa_code as varchar))), '') as lsoa_code,
    try_cast(imd_rounded as bigint) as imd_rounded,
    imd_rounded is not null and try_cast(imd_rounded as bigint) is null as imd_rounded_unparsed,
    try_cast(townsend_score as double) as townsend_score,
    townsend_score is not null and try_cast(townsend_score as double) is null as townsend_score_unparsed
from raw_source
