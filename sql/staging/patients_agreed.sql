-- patients_agreed: one row per patient_id whose rows in the patients file all agree (sex, date of
-- birth, date of death). A patient given twice with different values is quarantined whole, with
-- every other row of theirs (issue 16): the pipeline cannot know which copy is right, so no event
-- or prescription is judged against either copy's dates. Identical copies are harmless: the
-- first is kept and the later ones are quarantined as duplicates.
select
    patient_id,
    any_value(sex) as sex,
    any_value(date_of_birth) as date_of_birth,
    any_value(date_of_death) as date_of_death
from staging.stg_patients
where patient_id is not null
group by patient_id
having count(distinct row(sex, date_of_birth, date_of_death)) = 1
