"""Choosing the model: `offline` (the deterministic guideline planner) or any pydantic-ai model name."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError

OFFLINE = "offline"


@dataclass(frozen=True)
class ModelChoice:
    name: str  # what the review reports
    kind: str  # "offline planner (deterministic rules, not an LLM)" | "LLM"
    model: object  # a pydantic-ai Model, or a model name string pydantic-ai resolves


def choose_model(name: str | None = None) -> ModelChoice:
    """`--model` / CLINAGENT_MODEL: `offline` (default); `openai:...`, `anthropic:...`, `ollama:...` and other
    pydantic-ai names; `openai-compatible:<model>` for a server at CLINAGENT_BASE_URL (key: CLINAGENT_API_KEY)."""
    name = name or os.environ.get("CLINAGENT_MODEL") or OFFLINE
    if name == OFFLINE:
        from .planner import planner_model

        return ModelChoice(
            "offline-guideline-planner", "offline planner (deterministic rules, not an LLM)", planner_model()
        )
    if name.startswith("openai-compatible:"):
        base = os.environ.get("CLINAGENT_BASE_URL")
        if not base:
            raise ConfigError("openai-compatible models need CLINAGENT_BASE_URL (e.g. http://127.0.0.1:8000/v1)")
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider

        model_name = name.split(":", 1)[1]
        provider = OpenAICompatibleProvider(
            "clinagent", base_url=base, api_key=os.environ.get("CLINAGENT_API_KEY", "not-needed")
        )
        return ModelChoice(name, "LLM", OpenAIChatModel(model_name, provider=provider))
    if ":" not in name:
        raise ConfigError(f"unknown model {name!r}: use 'offline' or a pydantic-ai name such as 'openai:gpt-4o'")
    return ModelChoice(name, "LLM", name)
