-- stg_practices: one row per row of the practices file, cast to contract types.
-- raw_source is the file as read by the loader (text for CSV, typed for Parquet); the loader
-- numbers the rows (source_row) in file order.
select
    try_cast(practice_pseudo_id as bigint) as practice_pseudo_id,
    nullif(trim(cast(pcn_code as varchar)), '') as pcn_code,
    nullif(trim(cast(pcn_name as varchar)), '') as pcn_name,
    nullif(trim(cast(icb_code as varchar)), '') as icb_code
from raw_source
