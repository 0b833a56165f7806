"""`llmd-operator profile` and `llmd-operator profile-job`.

Registered into the main CLI with `cli.add_command(profile)` and `cli.add_command(profile_job)`; also
`python -m llmd_operator.profile ...`. torch is imported only when a profile runs, so this module imports
in the operator image (no torch) and `profile-job` works there.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click
import yaml

from . import TORCH_MISSING
from .arch import Arch, ArchError, from_catalog_name, from_file

CPU_PARAMETER_LIMIT = 1_000_000_000


def _ints(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise click.BadParameter(f"not a comma-separated list of integers: {text!r}") from e
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter(f"need positive integers: {text!r}")
    return values


def _formats(text: str) -> list[str]:
    from ..slo.profiles import normalize_format  # noqa: PLC0415

    out = []
    for f in text.split(","):
        f = normalize_format(f)
        if f not in ("bf16", "fp8", "int8", "int4"):
            raise click.BadParameter(f"unknown format {f!r} (bf16, fp8, int8, int4)")
        if f not in out:
            out.append(f)
    return out


def _import_torch():
    try:
        import torch  # noqa: F401, PLC0415
        import safetensors  # noqa: F401, PLC0415
    except ImportError as e:
        raise click.ClickException(f"{TORCH_MISSING} ({e})") from e


def resolve_arch(model: str | None, config: str | None, weights: str | None) -> Arch:
    if model and config:
        raise click.UsageError("give --model or --config, not both")
    try:
        if config:
            return from_file(config)
        if weights and (Path(weights) / "config.json").exists():  # the checkpoint's own shapes win
            arch = from_file(Path(weights) / "config.json")
            return replace(arch, name=model) if model else arch
        if model:
            return from_catalog_name(model)
    except (ArchError, LookupError, KeyError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e
    raise click.UsageError("give --model NAME (a catalog model) or --config FILE (config.json or "
                           "spec.model.architecture), or --weights DIR holding a config.json")


def shrink_hint(arch: Arch) -> str:
    return (f"{arch.name} has {arch.parameters / 1e9:.1f}B parameters: too big to profile on CPU. Either\n"
            f"  --scale-down                 a small model of the same family (2 layers, hidden 512)\n"
            f"  --layers 2 --hidden 1024     your own size\n"
            f"  --device meta                weight and KV bytes only (no memory, no timings)\n"
            f"  --allow-large                run it anyway\n"
            f"or profile on its GPU: `llmd-operator profile-job -f llmd.yaml | kubectl apply -f -`")


@click.command("profile")
@click.option("--model", default=None, help="A catalog model, e.g. llama-3.1-8b.")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A Hugging Face config.json, or a YAML/JSON spec.model.architecture (with `name`).")
@click.option("--weights", type=click.Path(exists=True, file_okay=False), default=None,
              help="Local checkpoint directory (*.safetensors, Hugging Face names); random weights otherwise.")
@click.option("--formats", default="bf16,fp8,int8,int4", show_default=True, help="Weight formats to measure.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "meta"]), default="auto", show_default=True,
              help="auto: CUDA when present, else CPU. meta: weight and KV bytes only.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="profile-out", show_default=True)
@click.option("--scale-down", is_flag=True, help="Profile a small model of the same family (2 layers, hidden 512).")
@click.option("--layers", type=int, default=None, help="Override the number of layers.")
@click.option("--hidden", type=int, default=None, help="Override the hidden size (heads, MLP scale with it).")
@click.option("--vocab", type=int, default=None, help="Override the vocabulary size.")
@click.option("--prefill-lengths", default=None, help="Prompt lengths, e.g. 128,512,2048 (default by device).")
@click.option("--batches", default=None, help="Decode batch sizes, e.g. 1,8,32 (default by device).")
@click.option("--contexts", default=None, help="Decode context lengths, e.g. 1024,4096 (default by device).")
@click.option("--prompts", type=int, default=8, show_default=True, help="Prompts for the quality comparison.")
@click.option("--prompt-len", type=int, default=64, show_default=True, help="Tokens per quality prompt.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed repeats per point (median).")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Text file for perplexity (with --weights and a tokenizer.json beside them).")
@click.option("--int4-symmetric", is_flag=True,
              help="int4 without zero points (compressed-tensors W4A16) instead of asymmetric (AWQ/GPTQ).")
@click.option("--gpu-product", default=None, help="The nvidia.com/gpu.product label to record (default: from CUDA).")
@click.option("--tensor-parallel-size", type=int, default=1, show_default=True,
              help="Profile one rank's shard of a tensor-parallel replica.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None,
              help="CPU threads (default 1 on CPU: steady timings on a shared machine).")
@click.option("--allow-large", is_flag=True, help="Profile a model over 1B parameters on CPU anyway.")
@click.option("--publish-configmap", default=None, help="Also store profile.yaml and report.md in this ConfigMap.")
@click.option("--namespace", default=None, help="The ConfigMap's namespace (default: the pod's).")
def profile(model, config, weights, formats, device, out_dir, scale_down, layers, hidden, vocab, prefill_lengths,
            batches, contexts, prompts, prompt_len, repeats, text_file, int4_symmetric, gpu_product,
            tensor_parallel_size, seed, threads, allow_large, publish_configmap, namespace) -> None:
    """Measure weight bytes, KV bytes, prefill/decode speed and quantization error per weight format.

    Writes OUT/profile.yaml (capacity profile), OUT/report.md and OUT/throughput.png.
    """
    arch = resolve_arch(model, config, weights)
    if weights and (scale_down or layers or hidden or vocab):
        raise click.UsageError("--weights loads the real checkpoint: leave out --scale-down/--layers/--hidden/--vocab")
    if scale_down:
        arch = arch.scale_down()
    if layers or hidden or vocab:
        arch = arch.scaled(layers=layers, hidden=hidden, vocab=vocab)
    fmt_list = _formats(formats)
    _import_torch()
    import torch  # noqa: PLC0415

    from .results import write_outputs  # noqa: PLC0415
    from .run import Settings, profile as run_profile, resolve_device  # noqa: PLC0415

    try:
        resolved = resolve_device(device)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from e
    if resolved == "cpu" and arch.parameters > CPU_PARAMETER_LIMIT and not allow_large:
        raise click.ClickException(shrink_hint(arch))
    settings = Settings(formats=fmt_list, device=resolved, prefill_lengths=_ints(prefill_lengths),
                        batches=_ints(batches), contexts=_ints(contexts), prompts=prompts, prompt_len=prompt_len,
                        repeats=repeats, seed=seed, weights_dir=weights, text_file=text_file,
                        gpu_product=gpu_product, tensor_parallel_size=tensor_parallel_size,
                        int4_zero_point=not int4_symmetric, threads=threads)
    try:
        with torch.inference_mode():
            run = run_profile(arch, settings, echo=lambda s: click.echo(s, err=True))
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    written = write_outputs(run, out_dir)
    for kind, path in written.items():
        click.echo(f"wrote {path}")
    if publish_configmap:
        if "profile" not in written:
            raise click.ClickException("nothing to publish: no profile.yaml (meta device?)")
        from .publish import default_namespace, owner_from_env, publish  # noqa: PLC0415

        ns = namespace or default_namespace()
        what = publish(publish_configmap, ns, out_dir, owner_from_env())
        click.echo(f"configmap {ns}/{publish_configmap} {what}")


@click.command("profile-job")
@click.option("-f", "--filename", "file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A file holding the LLMDeployment to profile.")
@click.option("--name", default=None, help="Which LLMDeployment, when the file holds several.")
@click.option("--gpu", "gpu_product", default=None,
              help="nvidia.com/gpu.product to profile on (default: the plan's GPU).")
@click.option("--formats", default=None, help="Weight formats (default: spec.profiling.formats, else every "
                                             "format the GPU runs).")
@click.option("--image", default=None, help="Profiler image (default: spec.profiling.image, else the project's).")
@click.option("--tensor-parallel-size", type=int, default=None, help="Default: the plan's.")
def profile_job(file, name, gpu_product, formats, image, tensor_parallel_size) -> None:
    """Print the Job (with ServiceAccount, Role, RoleBinding) that profiles an LLMDeployment's model on a
    GPU node and stores the profile in ConfigMap <name>-capacity-profile: pipe it to `kubectl apply -f -`."""
    from ..api.documents import InvalidResource, is_custom_resource, parse, read_documents  # noqa: PLC0415
    from ..api.llmdeployment import LLMDeployment  # noqa: PLC0415
    from ..catalog import load_catalog  # noqa: PLC0415
    from ..planning.plan import PlanError, plan_deployment  # noqa: PLC0415
    from ..render.profiling_job import profiling_job  # noqa: PLC0415

    docs = [d for d in read_documents(file) if is_custom_resource(d) and d.body.get("kind") == "LLMDeployment"]
    if name:
        docs = [d for d in docs if d.body.get("metadata", {}).get("name") == name]
    if len(docs) != 1:
        raise click.ClickException(f"{file}: found {len(docs)} LLMDeployments"
                                   + ("" if name else "; pick one with --name"))
    body = docs[0].body
    meta = body.get("metadata", {})
    spec = body.get("spec", {})
    profiling = spec.get("profiling") or {}
    catalog = load_catalog()
    gpu, tp = gpu_product, tensor_parallel_size
    if gpu is None or tp is None:
        try:
            llmd = parse(docs[0])
            assert isinstance(llmd, LLMDeployment)
            plan = plan_deployment(llmd, catalog)
        except (InvalidResource, PlanError) as e:
            raise click.ClickException(f"cannot plan {meta.get('name')}: {e}; give --gpu and "
                                       "--tensor-parallel-size") from e
        gpu = gpu or plan.gpu.product
        tp = tp or plan.tensor_parallel_size
    if formats:
        fmt_list = _formats(formats)
    elif profiling.get("formats"):
        fmt_list = _formats(",".join(profiling["formats"]))
    else:
        fmt_list = ["bf16", "int8", "int4"]
        known = catalog.gpus.get(gpu)
        if known is None or known.compute_capability >= 8.9:
            fmt_list.insert(1, "fp8")
    objects = profiling_job(meta["name"], meta.get("namespace", "default"), spec["model"], gpu, int(tp),
                            fmt_list, image=image or profiling.get("image"))
    click.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)


def main() -> None:
    group = click.Group(commands={"profile": profile, "profile-job": profile_job})
    if len(sys.argv) > 1 and sys.argv[1] in group.commands:
        group()
    else:
        profile()
