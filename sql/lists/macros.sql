-- Macros the lists share; temporary, created on the lists' connection (phm/lists.py) before the
-- reasons and the list columns are made, so both write a risk the same way.
--
-- phm_risk_band_labels(edges): each band's label, e.g. ['0-5%', '5-10%', ..., '50% or over']: the
-- band from an edge to the next, or from the last edge up. ``edges`` start at 0 and include every
-- threshold that decides a reason (lists.parameters.risk_band_edges), so a band never straddles
-- one. Made once per list run (lists.parameters.risk_band_labels).
create or replace temp macro phm_risk_band_labels(edges) as (
    list_transform(range(1, len(edges) + 1),
        i -> printf('%g', edges[i]) || coalesce('-' || printf('%g', edges[i + 1]) || '%', '% or over'))
);

-- phm_risk_band(pct, edges, labels): a risk in percent as the band it falls in: the label of the
-- last edge at or below it; null stays null. Lists carry bands, never the exact risk: an exact
-- percentage is nearly unique to a patient and would link the rows of lists made under two keys
-- (issue 16 item 14). The labels come made (phm_risk_band_labels): written out for each risk, as
-- this macro did before, the two printf calls were most of the 1M-patient list columns' query
-- (1.7 s of its 2.9 s of CPU; docs/benchmarks.md).
create or replace temp macro phm_risk_band(pct, edges, labels) as (
    case when pct is not null then labels[len(list_filter(edges, e -> e <= pct))] end
);
