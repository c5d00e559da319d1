"""Population profiles and effect sizes for the synthetic generator, in one place.

Figures are rounded from public sources so the synthetic population behaves like England's
registered population; they are inputs to a simulation, not estimates to quote.
- Age: ONS mid-2021 England population by 5-year band (%).
- Ethnicity: 2021 census, England (White 81.0%, Asian 9.6%, Black 4.2%, Mixed 3.0%, Other 2.2%),
  spread over the 16 NHS categories. 'diverse_urban' is about 45% minority (non-White) groups.
- Deprivation and risk-factor gradients: direction and rough size from the literature summarised
  in shared/CONTEXT.md (South Asian and Black groups: more diabetes; Black groups: more
  hypertension; smoking and obesity rise with deprivation; most minority groups live
  disproportionately in deprived areas).
"""

from __future__ import annotations

import numpy as np

CATEGORIES = ("A", "B", "C", "D", "E", "F", "G", "H", "J", "K", "L", "M", "N", "P", "R", "S")

ETHNICITY_PROFILES: dict[str, dict[str, float]] = {
    "england": {
        "A": 73.5, "B": 0.9, "C": 6.6, "D": 0.9, "E": 0.4, "F": 0.8, "G": 0.9, "H": 3.3,
        "J": 2.8, "K": 1.1, "L": 1.6, "M": 1.1, "N": 2.6, "P": 0.5, "R": 0.8, "S": 2.2,
    },
    "diverse_urban": {
        "A": 44.0, "B": 2.0, "C": 9.0, "D": 1.8, "E": 1.2, "F": 1.5, "G": 1.5, "H": 7.0,
        "J": 5.5, "K": 4.5, "L": 4.0, "M": 4.0, "N": 8.0, "P": 1.5, "R": 1.5, "S": 3.0,
    },
}

# 5-year age bands (lower bound) and share of the population (%); the last band is 90-99.
AGE_BANDS = np.arange(0, 95, 5)
AGE_SHARES = np.array([5.4, 5.9, 6.0, 5.6, 6.0, 6.7, 7.0, 6.7, 6.4, 6.4, 6.9, 6.7, 5.9, 5.0,
                       5.0, 3.6, 2.5, 1.5, 0.9])
# Minority groups are younger on average: band weights are tilted by exp(tilt * (mid - 40) / 10).
AGE_TILT = {"A": 0.0, "B": 0.05, "C": -0.12}
AGE_TILT_DEFAULT = -0.22

# How much more deprived each category's areas are, on the latent deprivation scale (sd ~1).
DEPRIVATION_SHIFT = {
    "A": 0.0, "B": 0.1, "C": 0.3, "D": 0.7, "E": 0.6, "F": 0.3, "G": 0.5, "H": 0.2, "J": 1.0,
    "K": 1.2, "L": 0.5, "M": 0.8, "N": 0.8, "P": 0.8, "R": 0.0, "S": 0.6,
}

SOUTH_ASIAN = ("H", "J", "K", "L")
BLACK = ("M", "N", "P")

# Share of people in each category recorded with the 'any other' category of their broad group
# instead of their own (over-use of 'any other' categories in GP records).
ANY_OTHER_OF = {
    "A": "C", "B": "C", "C": "C", "D": "G", "E": "G", "F": "G", "G": "G", "H": "L", "J": "L",
    "K": "L", "L": "L", "M": "P", "N": "P", "P": "P", "R": "S", "S": "S",
}

# Other SNOMED codes seen in GP records that no project codelist uses (asthma, COPD, depression,
# anxiety, osteoarthritis, back pain, hypothyroidism, eczema, GORD, influenza vaccination, ...):
# they make the event volume realistic and exercise the handling of codes outside our lists.
OTHER_CODES = (
    "195967001", "13645005", "35489007", "197480006", "396275006", "279039007", "40930008",
    "43116000", "235595009", "86198006", "271737000", "68566005", "24700007",
)


# Ethnic differences in the true hazards of CVD and type 2 diabetes, on the log scale, by sex and
# QRISK3/QDiabetes ethnicity code (phm.ethnicity.QRISK3_ETHRISK: 1 White, 2 Indian, 3 Pakistani,
# 4 Bangladeshi, 5 Other Asian, 6 Black Caribbean, 7 Black African, 8 Chinese, 9 Other, which
# takes every Mixed and 'any other Black' category). They are the published effects of QRISK3-2017
# (CVD) and QDiabetes-2018 model C (type 2 diabetes, adjusted for HbA1c as the true model is),
# rounded: the best evidence there is on ethnic differences in these risks in England, from
# QResearch's millions of records. Until issue 22 the generator used effects set by hand (no
# excess CVD for Black groups; none for T2D in Mixed and Other groups) that differed from the
# published ones by up to 1.4 times; the fairness gate, which judges models against QRISK3 and
# QDiabetes, then measured that difference, not bias. The price: synthetic extracts cannot show
# what happens where a local population truly departs from the published effects
# (docs/fairness.md says what then sees it).
TRUE_ETHNIC_LOG_HR: dict[str, dict[str, tuple[float, ...]]] = {
    # code:      1     2     3     4     5      6      7      8      9
    "cvd": {"female": (0.0, 0.28, 0.56, 0.30, 0.07, -0.17, -0.39, -0.33, -0.17),
            "male": (0.0, 0.28, 0.47, 0.53, 0.04, -0.36, -0.40, -0.42, -0.26)},
    "t2d": {"female": (0.0, 0.60, 0.78, 1.19, 0.71, 0.12, 0.01, 0.57, 0.17),
            "male": (0.0, 0.68, 0.83, 1.10, 0.77, 0.21, 0.38, 0.34, 0.22)},
}

