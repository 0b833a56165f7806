"""Read custom resources from YAML files, or from the ```yaml blocks of a Markdown document."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from .inferencescheduler import InferenceScheduler
from .llmdeployment import LLMDeployment

KINDS = {
    ("inference.llm-d.io/v1alpha1", "LLMDeployment"): LLMDeployment,
    ("scheduler.llm-d.io/v1alpha1", "InferenceScheduler"): InferenceScheduler,
}
_FENCED_YAML = re.compile(r"^```ya?ml[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Document:
    """One YAML document: where it came from and what it holds."""

    source: str
    index: int
    body: dict

    @property
    def where(self) -> str:
        return f"{self.source} (document {self.index})"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input document, phrased for the person who wrote it."""

    where: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.message}"


def read_documents(path: str | Path, text: str | None = None) -> list[Document]:
    """Every mapping in a YAML file, or in the yaml blocks of a Markdown file, in order."""
    path = Path(path)
    text = path.read_text() if text is None else text
    chunks = _FENCED_YAML.findall(text) if path.suffix.lower() in (".md", ".txt", ".markdown") else [text]
    documents: list[Document] = []
    for chunk in chunks:
        try:
            loaded = list(yaml.safe_load_all(chunk))
        except yaml.YAMLError:
            if len(chunks) > 1:
                continue  # a prose file's snippet that is not YAML; the resources are elsewhere
            raise
        for body in loaded:
            if isinstance(body, dict):
                documents.append(Document(str(path), len(documents), body))
    return documents


def is_custom_resource(document: Document) -> bool:
    return (document.body.get("apiVersion"), document.body.get("kind")) in KINDS


def parse(document: Document) -> LLMDeployment | InferenceScheduler:
    """The typed resource, or ValueError listing every problem with field paths."""
    model = KINDS[(document.body.get("apiVersion"), document.body.get("kind"))]
    try:
        return model.model_validate(document.body)
    except ValidationError as error:
        raise InvalidResource([problem_from(document.where, e) for e in error.errors()]) from None


def problem_from(where: str, error: dict) -> Problem:
    field = ".".join(str(part) for part in error["loc"])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field; check its spelling against `kubectl explain` or docs/reference.md"
    elif error["type"] == "literal_error":
        message = f"must be one of {error['ctx']['expected']}"
    elif error["type"] == "missing":
        message = "required field is missing"
    elif "input" in error and not isinstance(error["input"], (dict, list)):
        message = f"{message} (got {error['input']!r})"
    return Problem(where, field, message)


class InvalidResource(ValueError):
    """A resource that does not match its schema; carries one Problem per mistake."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
