"""Container recipes: parse the Dockerfile/definition text and check what it refers to."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from shrinkwrap_async.cli import build_parser, main

DOCKER_INSTRUCTIONS = {"FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "LABEL"}
FQRN = "fix1.test.local"


def recipe(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["recipe", *args]) == 0
    return capsys.readouterr().out


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined; comments dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            instructions.append((keyword, rest.strip()))
            pending = ""
    assert not pending, "dangling line continuation"
    return instructions


def shrinkwrap_commands(text: str) -> list[list[str]]:
    commands = []
    for chunk in text.replace("\\\n", " ").replace("&&", "\n").splitlines():
        chunk = chunk.strip().removeprefix("#").strip().removeprefix("RUN ").strip()
        if chunk.startswith("shrinkwrap-async "):
            commands.append(shlex.split(chunk)[1:])
    return commands


def test_docker_embed(capsys: pytest.CaptureFixture[str]) -> None:
    text = recipe(capsys, "docker", "--fqrn", FQRN, "-x", "/data/cvmfs")
    assert text.startswith("# syntax=docker/dockerfile:1\n")
    instructions = dockerfile_instructions(text)
    assert instructions[0] == ("FROM", "debian:bookworm-slim")
    assert {keyword for keyword, _ in instructions} <= DOCKER_INSTRUCTIONS
    assert ("ADD", f"{FQRN}.tar.gz /cvmfs/") in instructions
    # The pack command in the comment is a valid command line producing that tarball.
    (pack,) = shrinkwrap_commands(text)
    args = build_parser().parse_args(pack)
    assert (args.command, args.repo, str(args.dest_base)) == ("pack", FQRN, "/data/cvmfs")
    assert args.output == f"{FQRN}.tar.gz"


def test_docker_build_is_multi_stage(capsys: pytest.CaptureFixture[str]) -> None:
    text = recipe(capsys, "docker", "--mode", "build", "--fqrn", FQRN, "--spec", "my.spec",
                  "--keys", "keys")  # fmt: skip
    instructions = dockerfile_instructions(text)
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert froms[0].endswith(" AS export") and len(froms) == 2
    assert {keyword for keyword, _ in instructions} <= DOCKER_INSTRUCTIONS
    copies = [rest.split() for keyword, rest in instructions if keyword == "COPY"]
    assert ["my.spec", f"/build/{FQRN}.spec"] in copies
    assert [f"{FQRN}.conf", f"/build/{FQRN}.conf"] in copies
    assert ["keys/", "/build/keys/"] in copies
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    assert any(r.startswith("pip install") for r in runs)
    final = runs[-1]
    assert final.startswith("--mount=type=bind,from=export,source=/export.tar,")
    assert "tar --xattrs" in final and "-C /cvmfs" in final
    parser = build_parser()
    commands = shrinkwrap_commands(text)
    assert [c[0] for c in commands] == ["export", "pack"]
    export, pack = commands
    assert export[export.index("-t") + 1] == f"/build/{FQRN}.spec"
    assert export[export.index("-x") + 1] == "/export"
    pack_args = parser.parse_args(pack)
    assert pack_args.output == "/export.tar" and str(pack_args.dest_base) == "/export"
    if "export" in parser._subparsers._group_actions[0].choices:  # type: ignore[union-attr]
        export_args = parser.parse_args(export)
        assert export_args.command == "export"


def test_singularity_embed_and_build(capsys: pytest.CaptureFixture[str]) -> None:
    text = recipe(capsys, "singularity", "--fqrn", FQRN)
    assert "Bootstrap: docker\nFrom: debian:bookworm-slim\n" in text
    sections = [line for line in text.splitlines() if line.startswith("%")]
    assert sections == ["%files", "%post"]
    assert f"    {FQRN}.tar.gz /tmp/{FQRN}.tar.gz" in text
    assert f"-xpzf /tmp/{FQRN}.tar.gz -C /cvmfs" in text

    text = recipe(capsys, "singularity", "--mode", "build", "--fqrn", FQRN)
    assert [line for line in text.splitlines() if line.startswith("Stage:")] == [
        "Stage: export", "Stage: final",
    ]  # fmt: skip
    assert "%files from export" in text
    assert f"echo '/*' > /build/{FQRN}.spec" in text  # no spec given: the whole repository
    pack = shrinkwrap_commands(text)[-1]
    assert build_parser().parse_args(pack).output == f"/tmp/{FQRN}.tar.gz"


def test_bind_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = recipe(capsys, "singularity", "--mode", "bind", "--fqrn", FQRN, "-x", "/scratch/cv/")
    assert f"--bind /scratch/cv/{FQRN}:/cvmfs/{FQRN}:ro" in text
    assert f"--bind {FQRN}.sqfs:/cvmfs:image-src=/" in text
    assert f'#SBATCH --volume="/scratch/cv/{FQRN}:/cvmfs/{FQRN}"' in text
    docker = recipe(capsys, "docker", "--mode", "bind", "--fqrn", FQRN, "-x", "/scratch/cv")
    assert docker.splitlines()[1] == (
        f"docker run --rm -it --volume /scratch/cv/{FQRN}:/cvmfs/{FQRN}:ro IMAGE"
    )
    (squashfs_pack,) = shrinkwrap_commands(docker)
    assert build_parser().parse_args(squashfs_pack).format == "squashfs"
    out = tmp_path / "Dockerfile"
    assert main(["recipe", "docker", "--fqrn", FQRN, "-o", str(out)]) == 0
    assert out.read_text().startswith("# syntax=docker/dockerfile:1")


@pytest.mark.parametrize("name", ["a/b", "", "bad name", "x..y", "$(evil).ch", "'q'"])
def test_bad_fqrn(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The name is written into Dockerfile and shell lines: anything but a plain repository
    name is refused (exit 2) before a line is written."""
    with pytest.raises(SystemExit) as stopped:
        main(["recipe", "docker", "--fqrn", name])
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert "is not a repository name" in captured.err and captured.out == ""
