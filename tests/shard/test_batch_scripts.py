"""The Slurm job-array script as the README tells to use it: N array tasks, then the final job."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from shrinkwrap_async.testing.command_line import run_cli_process, source_arguments
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import listing_tool

FQRN = "fix1.test.local"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm-export.sbatch"
PROGRAM = Path(sys.executable).parent / "shrinkwrap-async"  # the installed console script

pytestmark = pytest.mark.skipif(not PROGRAM.exists(), reason="shrinkwrap-async not installed")
listing = listing_tool()


async def run_script(argv: list[str], **env: str) -> tuple[int, str]:
    """``bash slurm-export.sbatch ARGV`` as a Slurm array task (or final job) would run it."""
    process = await asyncio.create_subprocess_exec(
        "bash", str(SCRIPT), *argv,
        env={**os.environ, "SHRINKWRAP_ASYNC": str(PROGRAM), **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, err.decode(errors="replace")


async def test_array_tasks_then_final_job_make_the_single_export(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path
) -> None:
    common = source_arguments(tmp_path, fixture_server.url, fixtures_dir / "keys", FQRN)
    single, array = tmp_path / "single", tmp_path / "array"
    assert (await run_cli_process("export", *common, "-x", str(single), "-q")).exit_code == 0

    argv = [*common, "-x", str(array)]
    tasks = [
        run_script(argv, SLURM_ARRAY_TASK_ID=str(k), SLURM_ARRAY_TASK_COUNT="3") for k in range(3)
    ]
    results = await asyncio.gather(*tasks)
    assert [code for code, _ in results] == [0, 0, 0], [err for _, err in results]

    code, err = await run_script(argv, SHRINKWRAP_FINAL="1")
    assert code == 0, err
    assert "all 3 shards ended complete" in err
    assert listing.diff(listing.dump(str(single), FQRN), listing.dump(str(array), FQRN)) == []
    assert (array / ".provenance" / FQRN / "export.json").is_file()


async def test_outside_an_array_the_script_refuses(tmp_path: Path) -> None:
    env = {"SLURM_ARRAY_TASK_ID": "", "SLURM_ARRAY_TASK_COUNT": ""}
    code, err = await run_script(["-r", FQRN, "-x", str(tmp_path)], **env)
    assert code == 2
    assert "submit with --array" in err
