"""Pure rendering: (spec, plan) -> the child objects the operator applies, as plain dicts."""

from __future__ import annotations

from ..api.llmdeployment import LLMDeployment
from ..catalog import Catalog
from ..planning.plan import DeploymentPlan
from . import autoscaling, services, workloads
from .profiling_job import profiling_job
from .labels import owned_selector, workload_name

__all__ = ["render_children", "owned_selector", "workload_name"]


def render_children(llmd: LLMDeployment, plan: DeploymentPlan, catalog: Catalog, convention: str,
                    drain_timeout: str | None = None, profile_published: bool = False) -> list[dict]:
    """Every object an LLMDeployment should own, in apply order (workloads before what points at them).

    With spec.profiling.enabled and no published profile yet, that includes the profiler Job and its RBAC.
    """
    children: list[dict] = []
    profiling = llmd.spec.profiling
    if profiling and profiling.enabled and not profile_published:
        children += profiling_job(
            llmd.metadata["name"], llmd.metadata.get("namespace", "default"),
            llmd.spec.model.model_dump(by_alias=True, exclude_none=True),
            profiling.gpu_product or plan.gpu.product, plan.tensor_parallel_size, list(profiling.formats),
            profiling.image)
    for pool in plan.pools:
        for capacity_type, share in workloads.capacity_split(pool).items():
            children.append(workloads.deployment(llmd, plan, pool, capacity_type, share["replicas"], catalog,
                                                 convention, drain_timeout))
            if pool.replicas_owner == "hpa":
                children.append(autoscaling.hpa(llmd, pool, capacity_type, share))
        children.append(services.disruption_budget(llmd, pool))
    children += services.services(llmd, plan)
    routing = services.routing_config(llmd)
    if routing:
        children.append(routing)
    return children
