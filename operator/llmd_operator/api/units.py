"""Units users write in specs: durations ("500ms", "2m") and Kubernetes quantities ("16Gi", "1")."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, Field

DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"
# Kubernetes resource.Quantity, as the apiserver accepts it (decimal or binary SI suffix, or exponent).
QUANTITY_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
# A target is a number, optionally with a duration unit: "500ms", "75000", "0.7".
TARGET_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$"

_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_QUANTITY_FACTORS = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def _stringify_number(value: object) -> object:
    # YAML authors write `minThroughput: 100` as often as `"100"`; both mean the same.
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return format(value, "g") if isinstance(value, float) else str(value)
    return value


Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, json_schema_extra={"x-llmd-format": "duration"}),
]
Target = Annotated[
    str,
    BeforeValidator(_stringify_number),
    Field(pattern=TARGET_PATTERN),
]
Quantity = Annotated[
    str,
    BeforeValidator(_stringify_number),
    Field(pattern=QUANTITY_PATTERN, json_schema_extra={"x-kubernetes-int-or-string": True}),
]


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "500ms", "60s", "2m" or "1h"."""
    match = re.fullmatch(DURATION_PATTERN, text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration; write e.g. 500ms, 60s, 2m or 1h")
    unit = match.group(2)
    return float(text[: -len(unit)]) * _DURATION_SECONDS[unit]


def parse_target(text: str) -> float:
    """A target's value in base units: durations in seconds, plain numbers as they are."""
    text = text.strip()
    if re.fullmatch(DURATION_PATTERN, text):
        return parse_duration(text)
    return float(text)


def target_is_duration(text: str) -> bool:
    return re.fullmatch(DURATION_PATTERN, text.strip()) is not None


def parse_quantity(text: str | int | float) -> Decimal:
    """The value of a Kubernetes quantity: "16Gi" -> 17179869184, "500m" -> 0.5."""
    text = str(text).strip()
    match = re.fullmatch(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?", text)
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity; write e.g. 16Gi, 500m or 2")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * _QUANTITY_FACTORS[suffix]
