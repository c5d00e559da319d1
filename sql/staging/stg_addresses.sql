-- stg_addresses: one row per row of the addresses file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order.
-- <column>_unparsed marks an optional value that was given but could not be cast.
select
    try_cast(patient_id as bigint) as patient_id,
    try_cast(start_date as date) as start_date,
    try_cast(end_date as date) as end_date,
    end_date is not null and try_cast(end_date as date) is null as end_date_unparsed,
    nullif(upper(trim(cast(lsoa_code as varchar))), '') as lsoa_code,
    try_cast(imd_rounded as bigint) as imd_rounded,
    imd_rounded is not null and try_cast(imd_rounded as bigint) is null as imd_rounded_unparsed,
    try_cast(townsend_score as double) as townsend_score,
    townsend_score is not null and try_cast(townsend_score as double) is null as townsend_score_unparsed
from raw_source
