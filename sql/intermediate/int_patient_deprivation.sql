-- int_patient_deprivation: one row per patient with an address on the index date.
--
-- The address current on the index date (start_date <= index date, no end_date or end_date >=
-- index date); overlapping addresses: the most recently started, then the higher IMD rank.
-- IMD rank (rounded to 100 in the extract) -> national decile and quintile, 1 = most deprived,
-- using the number of LSOAs ranked in the extract's IMD version. core20: the most deprived
-- national quintile (Core20PLUS5). Townsend: the extract's value, or when absent an
-- approximation from the IMD rank (linear, from +9 for the most deprived to -6 for the least,
-- the central range of Townsend scores), flagged in townsend_is_approximated.
with parameters as (
    select index_date, imd_version, imd_lsoa_count from features.parameters
),

current_address as (
    select
        a.patient_id,
        a.lsoa_code,
        a.imd_rounded,
        a.townsend_score,
        row_number() over (
            partition by a.patient_id order by a.start_date desc, a.imd_rounded desc
        ) as recency
    from main.addresses as a, parameters as p
    where a.start_date <= p.index_date
      and (a.end_date is null or a.end_date >= p.index_date)
),

final as (
    select
        c.patient_id,
        c.lsoa_code,  -- for the per-practice area counts (mart_practice_lsoa), not a model input
        p.imd_version,
        -- least() skips nulls in DuckDB: without the case an unknown area would be decile 10
        case when c.imd_rounded is not null
            then least(10, floor(c.imd_rounded * 10.0 / p.imd_lsoa_count) + 1)::integer end as imd_decile,
        case when c.imd_rounded is not null
            then least(5, floor(c.imd_rounded * 5.0 / p.imd_lsoa_count) + 1)::integer end as imd_quintile,
        case when c.imd_rounded is not null
            then c.imd_rounded * 5.0 / p.imd_lsoa_count < 1 end as core20,
        coalesce(c.townsend_score, 9.0 - 15.0 * c.imd_rounded / p.imd_lsoa_count) as townsend_score,
        c.townsend_score is null and c.imd_rounded is not null as townsend_is_approximated
    from current_address as c
    cross join parameters as p
    where c.recency = 1
)

select * from final
