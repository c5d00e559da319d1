-- stg_practice_registrations: one row per row of the registrations file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order.
-- Identifiers go through phm_whole_number (macros.sql): never coerced; <column>_excel_notation
-- marks an id Excel wrote as 8.3E+11 (the ingest stops).
-- <column>_unparsed marks an optional value that was given but could not be cast.
select
    phm_whole_number(patient_id) as patient_id,
    phm_excel_notation(patient_id) as patient_id_excel_notation,
    try_cast(start_date as date) as start_date,
    -- an end after the extract date: the registration is current (macros.sql)
    phm_period_end(end_date, (select extract_date from ingest.run_parameters)) as end_date,
    phm_ends_after_extract(end_date, (select extract_date from ingest.run_parameters))
        as end_date_after_extract,
    end_date is not null and try_cast(end_date as date) is null as end_date_unparsed,
    phm_whole_number(practice_pseudo_id) as practice_pseudo_id,
    phm_excel_notation(practice_pseudo_id) as practice_pseudo_id_excel_notation
from raw_source
