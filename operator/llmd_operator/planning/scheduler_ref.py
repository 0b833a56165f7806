"""Which InferenceScheduler an LLMDeployment uses: its own namespace first, then the operator's home."""

from __future__ import annotations

from ..api.inferencescheduler import InferenceScheduler, InferenceSchedulerSpec
from ..api.llmdeployment import LLMDeployment

DEFAULT_HOME_NAMESPACE = "llm-d-system"


def scheduler_name(llmd: LLMDeployment) -> str | None:
    return llmd.spec.scheduler_name


def resolve_scheduler(
    llmd: LLMDeployment, schedulers: list[InferenceScheduler], home_namespace: str = DEFAULT_HOME_NAMESPACE
) -> InferenceScheduler | None:
    """The referenced scheduler, or None when the deployment references none or it does not exist (yet)."""
    wanted = scheduler_name(llmd)
    if not wanted:
        return None
    namespace = llmd.metadata.get("namespace", "default")
    by_place = {(s.metadata.get("namespace", "default"), s.metadata.get("name")): s for s in schedulers}
    return by_place.get((namespace, wanted)) or by_place.get((home_namespace, wanted))


def slo_policy_in_force(llmd: LLMDeployment, scheduler: InferenceSchedulerSpec | None):
    """(objectives, scaling block, algorithm) in force: the inline sloPolicy first, else the scheduler's."""
    inline = llmd.spec.scheduling.slo_policy if llmd.spec.scheduling else None
    if inline is not None:
        algorithm = inline.scaling.algorithm if inline.scaling else None
        return inline.objectives, inline.scaling, algorithm or "default"
    policy = scheduler.slo_policy if scheduler else None
    if policy is None:
        return [], None, "default"
    return policy.objectives, policy.scaling, policy.scaling.algorithm if policy.scaling else "default"
