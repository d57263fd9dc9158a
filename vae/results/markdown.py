"""The Markdown form of a table: numbers to two decimals, a missing value (NaN, None) as "—". The CSV beside it
keeps a missing value as an empty cell, which every CSV reader takes as missing."""

from __future__ import annotations

import pandas as pd

MISSING = "—"


def markdown(table: pd.DataFrame) -> str:
    """``table`` as a Markdown table without its index, every missing value written ``MISSING``; a numeric column
    stays aligned as numbers where all its values are missing."""
    shown = table.astype(object).where(table.notna(), None)
    align = [
        "decimal" if pd.api.types.is_numeric_dtype(table[c]) and table[c].isna().all() else "global"
        for c in table.columns
    ]
    return shown.to_markdown(index=False, floatfmt=".2f", missingval=MISSING, colalign=align)
