"""A2A (Agent2Agent protocol, v0.3) cards of live agents: what an A2A client or an LLM planner reads
to choose an agent. Pure: an ``AgentCard`` in, the A2A ``AgentCard`` JSON out.

An ants-nats agent is reached through the board, not over HTTP: the card's ``url`` is the NATS
server and its ``preferredTransport`` is ``NATS``; each capability is a skill (its description,
examples and, in the description, the JSON Schemas of what it takes and gives).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

from pydantic import JsonValue

from ._connect import without_credentials
from .models import AgentCard, CapabilitySpec

A2A_PROTOCOL_VERSION = "0.3.0"
_JSON = "application/json"


def a2a_card(card: AgentCard, *, server_url: str) -> dict[str, JsonValue]:
    """The A2A ``AgentCard`` of ``card``, reachable through the NATS server at ``server_url``."""
    capabilities = ", ".join(spec.name for spec in card.capabilities) or "any task"
    return {
        "protocolVersion": A2A_PROTOCOL_VERSION,
        "name": card.name,
        "description": card.description or f"ants-nats agent {card.id}: {capabilities}",
        "url": _public(server_url),
        "preferredTransport": "NATS",
        "version": card.software,
        "capabilities": {"streaming": False, "pushNotifications": False},
        "defaultInputModes": [_JSON],
        "defaultOutputModes": [_JSON],
        "skills": [_skill(spec) for spec in card.capabilities],
    }


def _public(server_url: str) -> str:
    """The first server of ``server_url``, without credentials (a card is shown to anyone)."""
    first = urlsplit(without_credentials(server_url.split(",", maxsplit=1)[0].strip()))
    return urlunsplit((first.scheme or "nats", first.netloc, "", "", ""))


def _skill(spec: CapabilitySpec) -> dict[str, JsonValue]:
    description = spec.description or f"Tasks that require the capability {spec.name!r}."
    for what, schema in (("Payload", spec.input_schema), ("Result", spec.output_schema)):
        if schema is not None:
            description += f"\n{what} JSON Schema: {json.dumps(schema, separators=(',', ':'))}"
    skill: dict[str, JsonValue] = {
        "id": spec.name,
        "name": spec.name,
        "description": description,
        "tags": [spec.name, *([f"version:{spec.version}"] if spec.version else [])],
        "inputModes": [_JSON],
        "outputModes": [_JSON],
    }
    if spec.examples:
        skill["examples"] = list(spec.examples)
    return skill
