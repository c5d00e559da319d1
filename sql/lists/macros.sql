-- Macros the lists share; temporary, created on the lists' connection (phm/lists.py) before the
-- reasons and the list columns are made, so both write a risk the same way.
--
-- phm_risk_band(pct, edges): a risk in percent as the band it falls in, e.g. '10-15%', or
-- '50% or over' above the last edge; null stays null. ``edges`` start at 0 and include every
-- threshold that decides a reason (lists.parameters.risk_band_edges), so a band never straddles
-- one. Lists carry bands, never the exact risk: an exact percentage is nearly unique to a
-- patient and would link the rows of lists made under two keys (issue 16 item 14).
create or replace temp macro phm_risk_band(pct, edges) as (
    case when pct is not null then
        printf('%g', list_max(list_filter(edges, e -> e <= pct)))
        || coalesce('-' || printf('%g', list_min(list_filter(edges, e -> e > pct))) || '%', '% or over')
    end
);
