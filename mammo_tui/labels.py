"""BI-RADS density labels: one meaning whatever the column dtype or the dataset's spelling.

A/1 = almost entirely fatty, B/2 = scattered fibroglandular, C/3 = heterogeneously dense,
D/4 = extremely dense. Letters are case-insensitive and surrounding whitespace is ignored;
integers (or integer-valued floats such as 3.0 from a pandas column with blanks) map 1->A ... 4->D.
The public datasets' spellings are understood too: `DENSITY C` (VinDr-Mammo), `ACR 2`,
`BI-RADS density B`, `C - heterogeneously dense`; `BI-RADS 2` alone is an assessment, not a density.
Percentage bins of fibroglandular tissue (KAU-BCMD: `0%-25%` ... `>75%`) are a separate map
(`percent_label`): a number alone is never read as a percentage.
"""

from __future__ import annotations

import math
import re

CLASS_NAMES: tuple[str, ...] = ("A", "B", "C", "D")
NUM_CLASSES = len(CLASS_NAMES)

_LETTERS = {name: i for i, name in enumerate(CLASS_NAMES)}
# words public datasets put before the class: "DENSITY C", "ACR 2", "BI-RADS density B"
# ("BI-RADS 2" alone is an assessment category, not a density: it needs the word density)
_PREFIX = re.compile(r"^(?:BREAST\s*)?(?:DENSITY|ACR|BI-?RADS\s*DENSITY|CATEGORY|TYPE)[\s:_-]*", re.I)


_LEADING_CLASS = re.compile(r"^([A-D1-4])\s*[-:).]\s*[A-Z]")
# the BI-RADS 5th edition's words for the four classes
_DESCRIPTIONS = (("ALMOST ENTIRELY FATTY", 0), ("FATTY", 0), ("SCATTERED FIBROGLANDULAR", 1),
                 ("SCATTERED AREAS OF FIBROGLANDULAR DENSITY", 1), ("SCATTERED FIBROGLANDULAR DENSITIES", 1),
                 ("HETEROGENEOUSLY DENSE", 2), ("EXTREMELY DENSE", 3))


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
    stripped = _PREFIX.sub("", text).strip()
    if stripped and stripped != text:
        return parse_label(stripped)
    lead = _LEADING_CLASS.match(text)  # "C - heterogeneously dense", "3: dense"
    if lead:
        return parse_label(lead.group(1))
    words = " ".join(text.replace("-", " ").split())
    for phrase, index in _DESCRIPTIONS:
        if words == phrase:
            return index
    if text in _LETTERS:
        return _LETTERS[text]
    if text.isdigit():
        return parse_label(int(text))
    # "3.0" as written by spreadsheets
    try:
        return parse_label(float(text)) if text else None
    except ValueError:
        return None


_PERCENT_NUMBER = re.compile(r"\d+(?:\.\d+)?")
PERCENT_BINS = (25.0, 50.0, 75.0, 100.0)  # upper bounds of A, B, C, D (BI-RADS 4th edition quartiles)


def percent_label(value: object) -> int | None:
    """The class of a fibroglandular-percentage bin: `0%-25%` A, `26%-50%` B, `51-75%` C, `>75%` D.

    Only text with a `%` is read (a bare 3 stays a BI-RADS class, not 3 %). The bin's upper bound
    picks the class; `>75%` (a lower bound only) is D; a range that spans two quartiles is refused."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if "%" not in text:
        return None
    numbers = [float(n) for n in _PERCENT_NUMBER.findall(text)]
    if not numbers or any(n > 100 for n in numbers):
        return None
    if text.lstrip().startswith(">"):
        return NUM_CLASSES - 1 if numbers[0] >= PERCENT_BINS[-2] else None
    low, high = min(numbers), max(numbers)
    index = next(i for i, bound in enumerate(PERCENT_BINS) if high <= bound)
    lower_bound = PERCENT_BINS[index - 1] if index else 0.0
    return index if low >= lower_bound - 1 else None  # "26%-50%" and "25-50%" both B; "0-50%" none


LABEL_MAPS = {"birads": parse_label, "percent": percent_label}


def label_name(index: int) -> str:
    return CLASS_NAMES[index]
