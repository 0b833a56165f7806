"""Shared fixtures: the seed's example resources, the catalog."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from llmd_operator.api.documents import is_custom_resource, read_documents
from llmd_operator.catalog import load_catalog
from llmd_operator.sim.trace import Request, Trace

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT.parent / "shared" / "seed" / "000_2af20bc6420d8224.txt"


def seed_documents():
    if not SEED.exists():
        pytest.fail(f"the seed is missing: {SEED} (the tests read the user's examples from ../shared)")
    return [d for d in read_documents(SEED) if is_custom_resource(d)]


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


def poisson_trace(rate: float, seconds: float, inp: int = 1000, out: int = 200, seed: int = 3) -> Trace:
    """Poisson arrivals at `rate` per second for `seconds`, all with the same prompt and answer lengths."""
    rng = random.Random(seed)
    t, reqs = 0.0, []
    while t < seconds:
        t += rng.expovariate(rate)
        reqs.append(Request(t, inp, out))
    return Trace("synthetic", "test", tuple(reqs))
