"""Click parameter types the commands share."""

from __future__ import annotations

import re

import click

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}


def parse_duration(text: str) -> float:
    """'500ms' -> 0.5, '0.5s' -> 0.5, '90' -> 90, '2m' -> 120, '2d' -> 172800."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h|d)?\s*", str(text))
    if not m:
        raise click.BadParameter(f"not a duration: {text!r} (e.g. 500ms, 0.5s, 2m)")
    return float(m.group(1)) * _UNITS[m.group(2) or ""]


class Duration(click.ParamType):
    """Seconds from a duration: 500ms, 0.5s, 90 (seconds), 2m."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except click.BadParameter as e:
            self.fail(str(e), param, ctx)
