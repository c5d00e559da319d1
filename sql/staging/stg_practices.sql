-- stg_practices: one row per row of the practices file, cast to contract types.
-- source_row is the 1-based data row in the source file (header not counted).
select
    rowid + 1 as source_row,
    try_cast(practice_pseudo_id as bigint) as practice_pseudo_id,
    nullif(trim(pcn_code), '') as pcn_code,
    nullif(trim(pcn_name), '') as pcn_name,
    nullif(trim(icb_code), '') as icb_code
from raw.practices
