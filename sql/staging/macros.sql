-- Macros the staging models share; temporary, created on the staging connection before each model.
--
-- phm_whole_number(x): an identifier as the contract says, a whole number written plainly
-- (digits, an optional minus sign, no leading zero). Anything else (1.4, 84064.5 or 7.0 from a
-- Parquet float column, 5.88e2, 0x24C, 007, ' 12', Excel's 8.30000E+11) becomes null, so the row
-- is quarantined by the rule "<column> is missing or is not a whole number": never coerced,
-- which could merge two patients (issue 16: 3,000 Excel-mangled ids collapsed into one).
-- An integer column (Parquet) is whole by its type: only its range is checked, with no text
-- round trip per row (typeof is resolved once, when the query is planned).
create or replace temp macro phm_whole_number(x) as (
    case when typeof(x) in ('TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'HUGEINT',
                            'UTINYINT', 'USMALLINT', 'UINTEGER', 'UBIGINT', 'UHUGEINT')
         then try_cast(x as bigint)
         when cast(try_cast(cast(x as varchar) as bigint) as varchar) = cast(x as varchar)
         then try_cast(cast(x as varchar) as bigint) end
);

-- phm_excel_notation(x): a number Excel wrote in scientific notation (8.30000E+11). Its digits
-- are gone, so the ingest stops and asks for a re-export rather than quarantining the rows.
-- Only text can hold that notation (a number column has no 'E+'), so other types are not
-- written out as text to look for it: false, or null for a missing value, as before.
create or replace temp macro phm_excel_notation(x) as (
    case when typeof(x) = 'VARCHAR'
         then strpos(upper(cast(x as varchar)), 'E+') > 0
              and regexp_full_match(trim(cast(x as varchar)), '[0-9]+([.][0-9]+)?[eE][+][0-9]+')
         when x is not null and typeof(x) in ('TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'HUGEINT',
                                              'UTINYINT', 'USMALLINT', 'UINTEGER', 'UBIGINT', 'UHUGEINT')
         then false
         else strpos(upper(cast(x as varchar)), 'E+') > 0
              and regexp_full_match(trim(cast(x as varchar)), '[0-9]+([.][0-9]+)?[eE][+][0-9]+') end
);

-- A period (registration, address) ending after the extract date has not ended yet: it is
-- current, as the contract says (an empty end_date), and 9999-12-31 written for 'open' is one.
-- phm_period_end(d, extract_date): the end date, or null while the period is current;
-- phm_ends_after_extract(d, extract_date): the end was after the extract date (counted in the
-- ingest notes). The extract date is an argument: a macro's body is bound when it is created,
-- before ingest.run_parameters exists for every model.
create or replace temp macro phm_period_end(d, extract_date) as (
    case when try_cast(d as date) <= extract_date then try_cast(d as date) end
);

create or replace temp macro phm_ends_after_extract(d, extract_date) as (
    coalesce(try_cast(d as date) > extract_date, false)
);

-- phm_yes_no(x): a yes/no answer from a practice's file (yes, no, true, false, y, n, 1, 0 in any
-- case, spaces ignored); anything else is null, so the row is quarantined rather than guessed.
create or replace temp macro phm_yes_no(x) as (
    case lower(trim(cast(x as varchar)))
        when 'yes' then true when 'y' then true when 'true' then true when '1' then true
        when 'no' then false when 'n' then false when 'false' then false when '0' then false
    end
);
