"""The ``ants-nats`` command: the demo runs to completion; bad input is a message and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ants_nats.server import EmbeddedServer, free_port


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ants_nats.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_on_its_own_embedded_server_finishes_every_task() -> None:
    result = run_cli("demo", "--documents", "3")
    assert result.returncode == 0, result.stderr
    assert "10 tasks in" in result.stdout
    assert "10 done" in result.stdout
    assert "Traceback" not in result.stderr


async def test_demo_against_a_given_server(nats_server: EmbeddedServer) -> None:
    result = run_cli("demo", "--documents", "2", "--server", nats_server.url)
    assert result.returncode == 0, result.stderr
    assert "7 done" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("demo", "--server", "nats://127.0.0.1:{port}"), "cannot connect to NATS"),
        (("demo", "--documents", "0"), "--documents must be at least 1"),
    ],
)
def test_bad_input_is_a_clear_message_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run_cli(*(a.format(port=free_port()) for a in args))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
