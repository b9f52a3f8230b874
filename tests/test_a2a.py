"""A2A cards: agents describe themselves and their capabilities for planners, and `ants-nats agents
--a2a` prints each live agent as an A2A (v0.3) agent card, valid for the official SDK's models."""

from __future__ import annotations

import asyncio
import json

from a2a.compat.v0_3.types import AgentCard as A2ACard

from ants_nats import Agent, AgentCard, CapabilitySpec, EmbeddedServer, TaskBoard
from ants_nats.a2a import a2a_card

from .test_cli import run_cli

SUMMARISE = CapabilitySpec(
    name="summarise",
    version="2",
    description="Summarises a document in at most five sentences.",
    input_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    output_schema={"type": "string"},
    examples=("Summarise this quarterly report",),
)


async def test_live_agents_print_as_valid_a2a_cards(nats_server: EmbeddedServer, board: TaskBoard) -> None:
    described = Agent(board, name="writer", capabilities=[SUMMARISE, "pdf"], description="Writes summaries.")
    plain = Agent(board, name="plain")
    async with described, plain:
        (card,) = [c for c in await board.directory.cards() if c.id == described.id]
        shown = await asyncio.to_thread(run_cli, "agents", "--a2a", "--server", nats_server.url)
    # The card on the wire carries what a planner needs.
    assert card.description == "Writes summaries."
    assert card.capabilities[1] == SUMMARISE
    assert shown.returncode == 0, shown.stderr
    cards = {c["name"]: c for c in json.loads(shown.stdout)}
    assert set(cards) == {"writer", "plain"}
    for raw in cards.values():  # each validates, and nothing of ours is lost to an unknown key
        parsed = A2ACard.model_validate(raw)
        assert parsed.model_dump(by_alias=True, exclude_none=True, mode="json") == raw
    writer = A2ACard.model_validate(cards["writer"])
    assert (writer.description, writer.url, writer.preferred_transport) == (
        "Writes summaries.",
        nats_server.url,
        "NATS",
    )
    skills = {skill.id: skill for skill in writer.skills}
    assert set(skills) == {"pdf", "summarise"}
    assert skills["summarise"].examples == ["Summarise this quarterly report"]
    assert skills["summarise"].tags == ["summarise", "version:2"]
    assert '"required":["text"]' in skills["summarise"].description
    assert cards["plain"]["skills"] == [] and "ants-nats agent" in cards["plain"]["description"]


def test_a_card_names_the_server_without_credentials() -> None:
    card = AgentCard(id="a1", name="a", load=0, capacity=1, software="x")
    shown = a2a_card(card, server_url="nats://svc:secret@nats.internal:4222,nats://other:4222")
    assert shown["url"] == "nats://nats.internal:4222"
