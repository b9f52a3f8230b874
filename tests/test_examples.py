"""The examples in examples/ run as a user would run them: each as its own process, on its own
embedded server (one against a given server, --server), and each shows what it promises; the docs
link every example and document every public name."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ants_nats
from ants_nats import EmbeddedServer

from .conftest import ContainerServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DOCS = EXAMPLES.parent / "docs"


def run(name: str, *args: str) -> str:
    """Run ``examples/<name>``; its standard output, once it has exited 0."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_single_agent_does_every_task() -> None:
    out = run("single_agent.py")
    assert "embedded nats-server at nats://127.0.0.1:" in out
    assert "shout-4: done -> 'A BOSS!'" in out
    assert "done 5/5" in out


def test_a_dag_is_worked_by_two_kinds_of_agents(nats_server: EmbeddedServer | ContainerServer) -> None:
    out = run("dag.py", "--server", nats_server.url)
    assert "embedded" not in out  # it used the server it was given
    assert re.findall(r"^fetch-\S+ +done +by fetcher-", out, re.M).__len__() == 3
    assert re.findall(r"^(?:summarise-\S+|report) +done +by summariser-", out, re.M).__len__() == 4
    assert "summarise-termites: The termites page: ..." in out
    assert "done 7/7" in out


def test_an_llm_agent_is_rate_limited_and_stopped_by_its_budget() -> None:
    out = run("llm_agent.py")
    # 120 tokens a call, 400 allowed: the fourth call starts with 360 spent, the fifth never does.
    assert "done 4/6, refused for the budget 2" in out
    assert "budget 'summaries': spent 480 of 400 tokens" in out
    assert out.count("failed unclaimed: budget 'summaries' is spent") == 2
    assert "(put back, not counted as attempts): 1" in out
    # Two runs may start in any two seconds, swarm-wide: no three calls within two seconds.
    calls = [
        float(t) for t in re.findall(r"([\d.]+)s", out.split("model calls started at:")[1].splitlines()[0])
    ]
    assert len(calls) == 5
    assert all(later - earlier >= 1.9 for earlier, later in zip(calls, calls[2:], strict=False))


def test_an_adversary_is_quarantined_and_no_task_is_lost(
    nats_server: EmbeddedServer | ContainerServer,
) -> None:
    out = run("adversary.py", "--server", nats_server.url)
    assert "ledger: freeloader claimed 2, abandoned 2, completed 0" in out
    assert "freeloader tried to claim job-late: refused (quarantined)" in out
    assert "job-0     done  attempts: freeloader:expired, honest:completed" in out
    assert "done 5/5" in out
    assert "freeloader quarantined: yes" in out
    # Again on the same board, which remembers the first run's tasks and freeloader: its own ids.
    again = run("adversary.py", "--server", nats_server.url)
    suffix = re.search(r"this run's ids end in (-[0-9a-f]{4})", again)
    assert suffix is not None
    assert f"freeloader{suffix[1]} tried to claim job-late{suffix[1]}: refused (quarantined)" in again
    assert "done 5/5" in again


@pytest.mark.parametrize(
    "example", sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
)
def test_every_example_is_linked_from_the_docs(example: str) -> None:
    pages = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    assert f"examples/{example}" in pages


def test_every_public_name_is_in_the_api_reference() -> None:
    pages = "\n".join(p.read_text() for p in (DOCS / "reference").glob("*.md"))
    documented = set(re.findall(r"^::: ants_nats\.(\w+)$", pages, re.M))
    assert set(ants_nats.__all__) - {"__version__"} == documented
