"""Demo stand-in for an analyst's notebook: a checked table from the delivered data.

Until the locked-down workspace lands, the demo runs this analysis directly on the delivery:
persons by cohort role and age band, built with the airlock's safe_crosstab so that it comes back
already checked and suppressed.
"""

import sys
from pathlib import Path

import pandas as pd

from secure_env.analyst import safe_crosstab

delivery, out = Path(sys.argv[1]), Path(sys.argv[2])
persons = pd.read_parquet(delivery / "persons")
table = safe_crosstab(persons, "age_band", "cohort_role")
out.parent.mkdir(parents=True, exist_ok=True)
table.to_csv(out)
print(table.table.to_string())
print(f"automatic check: {table.report['status']}; suppressed {table.suppressed_primary} primary and "
      f"{table.suppressed_secondary} secondary cells")
