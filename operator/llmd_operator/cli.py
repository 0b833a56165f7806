"""The `llmd-operator` command: plan, render and CRDs without a cluster; run the operator; simulate fleets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import yaml

from .api.crd import all_crds, render_yaml
from .api.documents import Document, InvalidResource, Problem, is_custom_resource, parse, read_documents
from .api.inferencescheduler import InferenceScheduler
from .api.llmdeployment import LLMDeployment
from .api.validation import cel_problems
from .catalog import load_catalog
from .planning.plan import PlanError, PlanOptions, plan_deployment
from .planning.scheduler_ref import DEFAULT_HOME_NAMESPACE, resolve_scheduler
from .render import render_children

CONVENTIONS = ["karpenter", "gke", "eks", "aks", "seed"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "LLMD"})
@click.version_option(package_name="llmd-operator")
def cli() -> None:
    """Serve LLMs on Kubernetes at the least cost that still holds their latency SLOs."""


def _load(files: tuple[str, ...]) -> tuple[list[tuple[Document, LLMDeployment | InferenceScheduler]], list[Problem]]:
    resources, problems = [], []
    for file in files:
        try:
            documents = read_documents(file)
        except (OSError, yaml.YAMLError) as error:
            problems.append(Problem(file, "(file)", f"cannot read: {error}".replace("\n", " ")))
            continue
        found = [d for d in documents if is_custom_resource(d)]
        if not found:
            problems.append(Problem(file, "(file)", "holds no LLMDeployment or InferenceScheduler"))
        for document in found:
            document.body.setdefault("metadata", {}).setdefault("namespace", "default")
            try:
                resource = parse(document)
            except InvalidResource as error:
                problems.extend(error.problems)
                continue
            rule_problems = cel_problems(document)
            problems.extend(rule_problems)
            if not rule_problems:
                resources.append((document, resource))
    return resources, problems


def _gpu_nodes(nodes_file: str | None, product_label: str) -> tuple[dict[str, str], ...] | None:
    """Labels of the GPU nodes in a `kubectl get nodes -o yaml` file (a List, or Node documents)."""
    if not nodes_file:
        return None
    found = []
    for document in yaml.safe_load_all(Path(nodes_file).read_text()):
        for node in (document or {}).get("items", [document]) if isinstance(document, dict) else []:
            node_labels = (node.get("metadata") or {}).get("labels") or {}
            if node.get("kind", "Node") == "Node" and product_label in node_labels:
                found.append(node_labels)
    return tuple(found)


def _plans(files, provider, convention, home_namespace, nodes_file=None):
    resources, problems = _load(files)
    catalog = load_catalog()
    gpu_nodes = _gpu_nodes(nodes_file, catalog.conventions["gpu_product_label"])
    schedulers = [r for _, r in resources if isinstance(r, InferenceScheduler)]
    results = []
    for document, resource in resources:
        if not isinstance(resource, LLMDeployment):
            continue
        scheduler = resolve_scheduler(resource, schedulers, home_namespace)
        options = PlanOptions(provider=provider, capacity_convention=convention,
                              scheduler=scheduler.spec if scheduler else None, gpu_nodes=gpu_nodes)
        try:
            results.append((resource, plan_deployment(resource, catalog, options), scheduler))
        except PlanError as error:
            problems.append(Problem(document.where, "spec", str(error)))
    return results, problems, catalog


def _report(problems: list[Problem]) -> None:
    for problem in problems:
        click.echo(f"error: {problem}", err=True)


common_options = [
    click.option("-f", "--filename", "files", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
                 help="YAML file, or Markdown file whose ```yaml blocks hold resources. Repeatable."),
    click.option("--provider", default=None, help="Price table provider (default: the catalog's, aws)."),
    click.option("--capacity-convention", type=click.Choice(CONVENTIONS), default="karpenter", show_default=True,
                 help="How the cluster labels spot and on-demand nodes."),
    click.option("--home-namespace", default=DEFAULT_HOME_NAMESPACE, show_default=True,
                 help="Where shared InferenceSchedulers live."),
    click.option("--nodes", "nodes_file", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="The cluster's nodes (`kubectl get nodes -o yaml`): choose the GPU product among those "
                      "their GPU nodes offer, as the operator does. Default: any product."),
]


def with_common_options(function):
    for option in reversed(common_options):
        function = option(function)
    return function


@cli.command()
@with_common_options
@click.option("-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table", show_default=True)
def plan(files, provider, capacity_convention, home_namespace, nodes_file, output) -> None:
    """Memory, GPUs, vLLM arguments and $/hour of each LLMDeployment in FILES; no cluster needed."""
    results, problems, _ = _plans(files, provider, capacity_convention, home_namespace, nodes_file)
    plans = [p.to_dict() for _, p, _ in results]
    if output == "json":
        click.echo(json.dumps(plans, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(plans, sort_keys=False), nl=False)
    else:
        click.echo(_table(results))
    _report(problems)
    sys.exit(1 if problems else 0)


def _table(results) -> str:
    header = ["NAMESPACE", "NAME", "POOL", "REPLICAS", "SPOT/OD", "GPU", "TP", "QUANT", "WEIGHTS", "KV/TOKEN",
              "KV-TOKENS", "$/HOUR"]
    rows = []
    for llmd, plan, _ in results:
        for pool in plan.pools:
            rows.append([
                plan.namespace, plan.name, pool.role, f"{pool.replicas} ({pool.replicas_owner})",
                f"{pool.spot_replicas}/{pool.on_demand_replicas}", plan.gpu.product, str(plan.tensor_parallel_size),
                plan.scheme.name, f"{plan.fit.weights_bytes / 2**30:.1f}Gi", f"{plan.fit.kv_bytes_per_token // 1024}Ki",
                str(pool.kv_capacity_tokens), "-" if pool.cost_per_hour is None else f"{pool.cost_per_hour:.2f}",
            ])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows])


@cli.command()
@with_common_options
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
def render(files, provider, capacity_convention, home_namespace, nodes_file, output) -> None:
    """The objects the operator would create for each LLMDeployment in FILES, like `helm template`.

    Owner references are added at apply time, when the LLMDeployment's uid is known.
    """
    results, problems, catalog = _plans(files, provider, capacity_convention, home_namespace, nodes_file)
    objects = []
    for llmd, deployment_plan, scheduler in results:
        drain = _drain_timeout(scheduler)
        objects += render_children(llmd, deployment_plan, catalog, capacity_convention, drain)
    if output == "json":
        click.echo(json.dumps(objects, indent=2))
    else:
        click.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)
    _report(problems)
    sys.exit(1 if problems else 0)


def _drain_timeout(scheduler: InferenceScheduler | None) -> str | None:
    policy = scheduler.spec.cost_optimization.spot_instance_policy if (
        scheduler and scheduler.spec.cost_optimization and scheduler.spec.cost_optimization.spot_instance_policy) else None
    return policy.interruption.drain_timeout if policy and policy.interruption else None


@cli.command()
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Write one file per CRD here instead of printing them.")
def crds(out_dir) -> None:
    """The CustomResourceDefinitions, generated from the API models (multi-document YAML)."""
    generated = all_crds()
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for file, crd in generated.items():
            (Path(out_dir) / file).write_text(render_yaml(crd))
        return
    click.echo("---\n".join(render_yaml(crd) for crd in generated.values()), nl=False)


@cli.command()
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write to this file instead of stdout.")
def reference(out) -> None:
    """The API reference (Markdown), generated from the same schemas as the CRDs."""
    from .api.reference import reference_markdown  # noqa: PLC0415

    text = reference_markdown()
    if out:
        Path(out).write_text(text)
    else:
        click.echo(text, nl=False)


def _register_optional_commands() -> None:
    from .controller.command import run  # noqa: PLC0415  (kopf is imported only when needed)

    cli.add_command(run)
    from .profile.command import profile, profile_job  # noqa: PLC0415  (torch is imported only when profiling)
    from .sim.command import simulate  # noqa: PLC0415
    from .sim.live_command import simulate_live  # noqa: PLC0415

    cli.add_command(simulate)
    cli.add_command(simulate_live)
    cli.add_command(profile)
    cli.add_command(profile_job)


def main() -> None:
    _register_optional_commands()
    cli()


if __name__ == "__main__":
    main()
