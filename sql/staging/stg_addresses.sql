-- stg_addresses: one row per row of the addresses file, cast to contract types.
select
    rowid + 1 as source_row,
    try_cast(patient_id as bigint) as patient_id,
    try_cast(start_date as date) as start_date,
    try_cast(end_date as date) as end_date,
    nullif(upper(trim(lsoa_code)), '') as lsoa_code,
    try_cast(imd_rounded as bigint) as imd_rounded,
    try_cast(townsend_score as double) as townsend_score
from raw.addresses
