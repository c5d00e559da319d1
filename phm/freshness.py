"""The stale-data guard: an extract older than ``[run] max_extract_age_days`` (default 45) is not
turned into lists as if it were current.

A PCN team acts on a list as a picture of its patients today: a blood pressure of 185/115 read
eight months ago, with no diagnosis since, may have been dealt with long ago, and someone
registered since is missing. The age is counted from the extract's own date (``extract.json``)
to today (UTC). What happens to a stale extract is the ICS's choice (``[run] stale_extract``):

- ``"refuse"`` (the default): ``phm run`` stops before any work (StaleExtract, exit code 10),
  the published lists stay, and they are marked as not replaced (flows/publish.py);
- ``"mark"``: the run goes on and says so loudly: in the run's summary and Prefect log, in the
  lists' manifest (``stale``) and at the top of every workbook's Read me sheet.

45 days: GP extracts for population health management are typically monthly, so a run on a
month's extract is at most about 31 days old plus a fortnight's slack for a late delivery;
anything older means a delivery was missed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from phm.exceptions import StaleExtract

STALE_POLICIES = ("refuse", "mark")
DEFAULT_MAX_AGE_DAYS = 45


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@dataclass(frozen=True)
class Freshness:
    extract_date: dt.date
    today: dt.date
    max_age_days: int

    @property
    def age_days(self) -> int:
        return (self.today - self.extract_date).days

    @property
    def stale(self) -> bool:
        return self.age_days > self.max_age_days

    def message(self) -> str:
        return (f"the extract is dated {self.extract_date.isoformat()}, {self.age_days} days before today "
                f"({self.today.isoformat()}); the limit is {self.max_age_days} days ([run] max_extract_age_days)")

    def manifest(self) -> dict:
        """What the lists' manifest records (``stale`` is only there when the extract is)."""
        return {"extract_date": self.extract_date.isoformat(), "extract_age_days": self.age_days,
                "max_extract_age_days": self.max_age_days}


def check_freshness(extract_date: dt.date, max_age_days: int, policy: str,
                    today: dt.date | None = None) -> Freshness:
    """The extract's age; StaleExtract when it is over the limit and the policy is "refuse"."""
    freshness = Freshness(extract_date, today or today_utc(), max_age_days)
    if freshness.stale and policy == "refuse":
        raise StaleExtract(f"stale data: {freshness.message()}. No list is produced and the published lists "
                           "stay, marked as not replaced. Deliver a newer extract, or set [run] stale_extract = "
                           "\"mark\" to publish it marked as stale, or raise max_extract_age_days")
    return freshness


def stale_banner(stale: dict) -> str:
    """The line a reader of a stale list sees first (manifest ``stale``)."""
    return (f"STALE DATA: these lists come from an extract dated {stale['extract_date']}, "
            f"{stale['extract_age_days']} days old when published (the limit is {stale['max_extract_age_days']} "
            "days). Patients may have been diagnosed, treated, registered or have left since: check the record "
            "before acting on a row.")
