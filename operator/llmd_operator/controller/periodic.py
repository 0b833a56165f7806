"""Fleet-wide periodic work (the SLO loop), run at most once per interval.

Kopf timers drive it, so it pauses with everything else when peering makes this replica a standby.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .config import CONFIG

log = logging.getLogger("llmd_operator.periodic")
_lock = asyncio.Lock()
_last_tick = 0.0


async def maybe_tick() -> None:
    """Run one SLO-loop tick for every managed deployment if the interval has passed; otherwise do nothing."""
    global _last_tick
    if _lock.locked() or time.monotonic() - _last_tick < CONFIG.slo_interval_seconds:
        return
    async with _lock:
        _last_tick = time.monotonic()
        await asyncio.to_thread(_tick)


def _tick() -> None:
    from ..slo import loop  # noqa: PLC0415
    from . import reconcile  # noqa: PLC0415

    try:
        for result in loop.tick(loop.prometheus_client(), reconcile.catalog()):
            if result.get("changes"):
                log.info("%s: %s (%s)", result["deployment"], "; ".join(result["changes"]), result["reason"])
    except Exception:  # noqa: BLE001 (the next tick tries again)
        log.exception("SLO loop tick failed")
