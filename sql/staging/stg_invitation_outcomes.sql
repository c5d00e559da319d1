-- stg_invitation_outcomes: one row per row of a practice's outcomes file (phm outcomes), cast.
-- What happened after an invitation, as the practice recorded it: NHS England's Core20PLUS5
-- and the NHS Health Check programme measure a preventive programme by its uptake (invited ->
-- attended) by group, not by whom it selected; docs/lists.md "Outcomes back".
-- raw_source is the file read as text; yes/no columns take yes, no, true, false, y, n, 1, 0
-- (any case); anything else becomes null and the row is quarantined, never guessed.
select
    lower(nullif(trim(cast(pseudonym as varchar)), '')) as pseudonym,
    phm_yes_no(contacted) as contacted,
    phm_yes_no(attended) as attended,
    phm_yes_no(declined) as declined,
    try_cast(nullif(trim(cast(date as varchar)), '') as date) as outcome_date
from raw_source
