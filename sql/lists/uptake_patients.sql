-- uptake_patients: one row per patient listed at a practice that has returned outcomes (phm
-- outcomes), with the broad ethnic group and IMD quintile they were last listed as, and whether
-- any returned outcome says they were contacted, attended or declined. A practice that returned
-- nothing is left out rather than counted as no one attending. Uptake of invitations by group is
-- the measure of a preventive programme's equity after selection (NHS England, Core20PLUS5;
-- NHS Health Check programme: uptake = attended / invited); phm/outcomes.py aggregates it.
with listed as (
    select practice_pseudo_id, pseudonym, arg_max(ethnicity_group, list_date) as ethnicity_group,
           arg_max(imd_quintile, list_date) as imd_quintile
    from lists.invitations
    group by practice_pseudo_id, pseudonym
),
answered as (
    select practice_pseudo_id, pseudonym, bool_or(contacted) as contacted, bool_or(attended) as attended,
           bool_or(declined) as declined
    from lists.invitation_outcomes
    group by practice_pseudo_id, pseudonym
)
select l.practice_pseudo_id, l.pseudonym, l.ethnicity_group, l.imd_quintile,
       coalesce(a.contacted, false) as contacted, coalesce(a.attended, false) as attended,
       coalesce(a.declined, false) as declined
from listed as l
left join answered as a using (practice_pseudo_id, pseudonym)
where l.practice_pseudo_id in (select practice_pseudo_id from lists.invitation_outcomes)
