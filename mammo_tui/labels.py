"""BI-RADS density labels: one meaning whatever the column dtype.

A/1 = almost entirely fatty, B/2 = scattered fibroglandular, C/3 = heterogeneously dense,
D/4 = extremely dense. Letters are case-insensitive and surrounding whitespace is ignored;
integers (or integer-valued floats such as 3.0 from a pandas column with blanks) map 1->A ... 4->D.
"""

from __future__ import annotations

import math

CLASS_NAMES: tuple[str, ...] = ("A", "B", "C", "D")
NUM_CLASSES = len(CLASS_NAMES)

_LETTERS = {name: i for i, name in enumerate(CLASS_NAMES)}


def parse_label(value: object) -> int | None:
    """Return the class index 0..3 for a label value, or None when it is not a BI-RADS density."""
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int,)) or (hasattr(value, "dtype") and getattr(value, "dtype").kind in "iu"):
        number = int(value)
        return number - 1 if 1 <= number <= NUM_CLASSES else None
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value, "dtype").kind == "f"):
        number = float(value)
        if math.isnan(number) or not number.is_integer():
            return None
        return parse_label(int(number))
    text = str(value).strip().upper()
    if text in _LETTERS:
        return _LETTERS[text]
    if text.isdigit():
        return parse_label(int(text))
    # "3.0" as written by spreadsheets
    try:
        return parse_label(float(text)) if text else None
    except ValueError:
        return None


def label_name(index: int) -> str:
    return CLASS_NAMES[index]
