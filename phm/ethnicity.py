"""NHS Data Dictionary ETHNIC CATEGORY and the broad groups used in reports.

'Z' (not stated: asked and declined) and '99' (not known: never asked, or no usable code) are
different facts and are kept apart everywhere.
"""

from __future__ import annotations

# letter -> (name, broad group in the 5-group scheme, group in OpenSAFELY's 6-group scheme)
# In both schemes Chinese (R) sits with 'Other', as in OpenSAFELY's grouping.
NHS_ETHNIC_CATEGORIES: dict[str, tuple[str, str]] = {
    "A": ("White - British", "White"),
    "B": ("White - Irish", "White"),
    "C": ("White - Any other White background", "White"),
    "D": ("Mixed - White and Black Caribbean", "Mixed"),
    "E": ("Mixed - White and Black African", "Mixed"),
    "F": ("Mixed - White and Asian", "Mixed"),
    "G": ("Mixed - Any other mixed background", "Mixed"),
    "H": ("Asian or Asian British - Indian", "Asian"),
    "J": ("Asian or Asian British - Pakistani", "Asian"),
    "K": ("Asian or Asian British - Bangladeshi", "Asian"),
    "L": ("Asian or Asian British - Any other Asian background", "Asian"),
    "M": ("Black or Black British - Caribbean", "Black"),
    "N": ("Black or Black British - African", "Black"),
    "P": ("Black or Black British - Any other Black background", "Black"),
    "R": ("Other ethnic groups - Chinese", "Other"),
    "S": ("Other ethnic groups - Any other ethnic group", "Other"),
}
NOT_STATED = "Z"
NOT_KNOWN = "99"
BROAD_GROUPS = ("White", "Mixed", "Asian", "Black", "Other")
# 'Any other ...' categories: their over-use is a recording-quality signal.
ANY_OTHER_CATEGORIES = ("C", "G", "L", "P", "S")
# QRISK3 ethnicity coding (ethrisk): 1 White or not stated, 2 Indian, 3 Pakistani, 4 Bangladeshi,
# 5 Other Asian, 6 Black Caribbean, 7 Black African, 8 Chinese, 9 Other (all Mixed and Other Black).
QRISK3_ETHRISK = {
    "A": 1, "B": 1, "C": 1, "D": 9, "E": 9, "F": 9, "G": 9, "H": 2, "J": 3, "K": 4, "L": 5,
    "M": 6, "N": 7, "P": 9, "R": 8, "S": 9, NOT_STATED: 1, NOT_KNOWN: 1,
}


def broad_group(category: str) -> str:
    """Broad group of a category letter; 'Not stated' for Z, 'Not known' for 99 or None."""
    if category == NOT_STATED:
        return "Not stated"
    if category in NHS_ETHNIC_CATEGORIES:
        return NHS_ETHNIC_CATEGORIES[category][1]
    return "Not known"
