"""Fleet simulator: trace replay through modelled vLLM replicas (offline mode).

trace.py (Azure CSV / Mooncake JSONL), engine.py (one replica, continuous batching), fleet.py (pools,
router, start-up, drain, spot, KV transfer, control loop), baselines.py (policies), run.py (one run ->
summary), command.py (`llmd-operator simulate`).
"""
