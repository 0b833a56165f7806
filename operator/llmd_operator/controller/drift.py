"""Does a live object already hold what we would apply? If so, applying it again would be a wasted write."""

from __future__ import annotations

from ..api.units import parse_quantity

_QUANTITY_PARENTS = {"requests", "limits", "averageValue", "sizeLimit"}


def holds(desired, live, key: str | None = None) -> bool:
    """True when every field of `desired` has the same value in `live` (which may hold more: defaults, status)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(k in live and holds(v, live[k], k) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(holds(d, l, key) for d, l in zip(desired, live))
    if desired == live:
        return True
    if isinstance(desired, (str, int, float)) and isinstance(live, (str, int, float)):
        # The API server writes quantities in canonical form ("0.5" becomes "500m"); compare their values.
        try:
            return parse_quantity(desired) == parse_quantity(live)
        except ValueError:
            return str(desired) == str(live)
    return False
