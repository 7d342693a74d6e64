"""Random-time SIGKILLs of the CLI's submit and resume, then finish: pay once, lose nothing.

Run by hand (not collected by pytest: the named crash points of ``test_run_folder.py``
are the CI's kill-anywhere tests; this sweeps the instants between them):

    .venv/bin/python -m tests.kill_sweep 0 12            # trials 0-11
    .venv/bin/python -m tests.kill_sweep 100 120 --submit-max 1.2

Each trial: a fresh emulator (batches take 0.1-1 s), ``pairbatch submit`` of 9 pairs in
3 segments (providers in turn) killed at a random moment, submitted again if it left no
registry, 0-3 ``pairbatch resume`` runs each killed at a random moment, a last resume,
then the checks: exactly 3 batches created, every pair once in the results or failed
attempts with the right winner, no temporary file left. A failing trial raises with
its number and the sequence of exits.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import tempfile
from pathlib import Path

from pairbatch import registry as reg
from pairbatch.testing import ProviderEmulator
from tests.engine_helpers import check_run, study_pairs
from tests.test_cli import CLI, cli_env
from tests.test_run_folder import resume_in_process, submit_args

PROVIDERS = ("openai", "anthropic", "gemini")


async def _run(args: list[str | Path], env: dict[str, str], kill_after: float) -> int:
    """The CLI's exit code, or -9 when it was still running after ``kill_after`` s."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *map(str, args),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(env),
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=kill_after)
    except TimeoutError:
        proc.send_signal(signal.SIGKILL)
        await proc.communicate()
        return -signal.SIGKILL
    assert proc.returncode in (0, 1), err.decode()
    return proc.returncode


async def trial(index: int, rng: random.Random, submit_max: float) -> list[tuple[str, int]]:
    provider = PROVIDERS[index % 3]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        out = tmp / "run"
        pairs = study_pairs(9, seed=index)
        pairs.write_csv(tmp / "pairs.csv")
        submit = submit_args(provider, tmp / "pairs.csv", out, n=3)
        resume: list[str | Path] = ["resume", out, "--interval-seconds", "0.05", "--no-progress"]
        async with ProviderEmulator(latency=(0.1, 1.0), seed=index) as emu:
            env = emu.env()
            exits = [("submit", await _run(submit, env, rng.uniform(0.05, submit_max)))]
            if not reg.holds_registry(out):
                assert emu.stats.batches_created[provider] == 0, (index, exits)
                exits.append(("submit again", await _run(submit, env, 60)))
            for _ in range(rng.randint(0, 3)):
                exits.append(("resume", await _run(resume, env, rng.uniform(0.2, 2.5))))
            exits.append(("last resume", await _run(resume, env, 60)))
            assert exits[-1][1] == 0, (index, exits)
            result = await resume_in_process(emu, out)
            created = emu.stats.batches_created[provider]
            assert created == 3, (index, exits, created)
        check_run(result, pairs)
        left = [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".part"))]
        assert not left, (index, exits, left)
        return exits


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=int)
    parser.add_argument("stop", type=int)
    parser.add_argument("--submit-max", type=float, default=2.5, help="latest submit kill, s")
    args = parser.parse_args()
    rng = random.Random(args.first)
    for index in range(args.first, args.stop):
        print(index, await trial(index, rng, args.submit_max), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
