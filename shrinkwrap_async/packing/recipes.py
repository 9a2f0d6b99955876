"""Container recipes around an export: Dockerfiles, Apptainer/Singularity definitions, and the
bind-mount alternative.

Three modes:

- ``embed``: the image carries an existing export, packed first with ``shrinkwrap-async pack``
  into a tarball (``ADD`` in a Dockerfile unpacks it; a Singularity ``%post`` runs tar), which
  keeps hard links, modes, owners, mtimes and ``user.*`` xattrs.
- ``build``: a first stage installs shrinkwrap-async with pip and runs the export, packs it,
  and the final stage unpacks the tarball into /cvmfs.
- ``bind``: no copy in the image; the export (or a SquashFS image of it) is mounted at run time.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

RUNTIMES: tuple[str, ...] = ("docker", "singularity")
MODES: tuple[str, ...] = ("embed", "build", "bind")
PYTHON_IMAGE = "python:3.11-slim"
DEFAULT_BASE_IMAGE = "debian:bookworm-slim"


@dataclass(frozen=True)
class RecipeOptions:
    fqrn: str = "sft.cern.ch"
    spec: str | None = None  # spec file in the build context; None = the whole repository
    config: str | None = None  # client config file in the build context (-f)
    keys: str | None = None  # directory of public keys in the build context
    dest_base: str = "/export/cvmfs"  # where the export lives on the host (embed, bind)
    base_image: str = DEFAULT_BASE_IMAGE
    package: str = "shrinkwrap-async"  # pip requirement installed in the build stage

    @property
    def tarball(self) -> str:
        return f"{self.fqrn}.tar.gz"

    @property
    def squashfs(self) -> str:
        return f"{self.fqrn}.sqfs"

    @property
    def config_name(self) -> str:
        return self.config or f"{self.fqrn}.conf"


def _q(word: str) -> str:
    return shlex.quote(word)


def pack_command(options: RecipeOptions, fmt: str = "tar") -> str:
    output = options.tarball if fmt == "tar" else options.squashfs
    return (
        f"shrinkwrap-async pack -x {_q(options.dest_base)} -r {_q(options.fqrn)} "
        f"--format {fmt} -o {_q(output)}"
    )


def _export_command(options: RecipeOptions, dest_base: str, workdir: str) -> str:
    spec = f"{workdir}/{options.fqrn}.spec"
    return (
        f"shrinkwrap-async export -r {_q(options.fqrn)} -f {workdir}/{_q(options.config_name)} "
        f"-t {_q(spec)} -x {dest_base}"
    )


def _spec_lines(options: RecipeOptions, workdir: str, copy: str) -> list[str]:
    """Lines that put the spec into the build stage: copied, or written for ``/*``."""
    target = f"{workdir}/{options.fqrn}.spec"
    if options.spec:
        return [f"{copy} {_q(options.spec)} {target}"]
    return []


def docker_recipe(mode: str, options: RecipeOptions) -> str:
    if mode == "embed":
        return "\n".join(
            [
                "# syntax=docker/dockerfile:1",
                f"# Embeds the export {options.dest_base}/{options.fqrn} as /cvmfs/{options.fqrn}.",
                "# Pack it into the build context first:",
                f"#   {pack_command(options)}",
                f"FROM {options.base_image}",
                "# ADD unpacks a local tarball, keeping hard links, modes, owners and mtimes.",
                f"ADD {_q(options.tarball)} /cvmfs/",
                "",
            ]
        )
    if mode == "build":
        work, export = "/build", "/export"
        copy_inputs = [f"COPY {_q(options.config_name)} {work}/{_q(options.config_name)}"]
        if options.keys:
            copy_inputs.append(f"COPY {_q(options.keys)}/ {work}/keys/")
        spec = _spec_lines(options, work, "COPY")
        if not spec:
            spec = [f"RUN echo '/*' > {work}/{options.fqrn}.spec"]
        return "\n".join(
            [
                "# syntax=docker/dockerfile:1",
                f"# Exports {options.fqrn} at build time and installs it as /cvmfs/{options.fqrn}.",
                f"# The build context holds {options.config_name} (the client configuration"
                + (f", whose keys are in {work}/keys" if options.keys else "")
                + ")"
                + (f" and {options.spec}." if options.spec else "."),
                f"FROM {PYTHON_IMAGE} AS export",
                f"RUN pip install --no-cache-dir {_q(options.package)}",
                *copy_inputs,
                *spec,
                f"RUN {_export_command(options, export, work)} \\",
                f"    && shrinkwrap-async pack -x {export} -r {_q(options.fqrn)} --format tar "
                f"-o {export}.tar",
                "",
                f"FROM {options.base_image}",
                "# Unpacking the tarball keeps hard links, modes, owners, mtimes and xattrs;",
                "# the bind mount keeps the tarball itself out of the image's layers.",
                f"RUN --mount=type=bind,from=export,source={export}.tar,target=/tmp/export.tar \\",
                "    mkdir -p /cvmfs && tar --xattrs --xattrs-include='user.*' --numeric-owner "
                "-xpf /tmp/export.tar -C /cvmfs",
                "",
            ]
        )
    if mode == "bind":
        return _bind_text("docker", options)
    raise ValueError(mode)


def singularity_recipe(mode: str, options: RecipeOptions) -> str:
    unpack = (
        "    mkdir -p /cvmfs\n"
        "    tar --xattrs --xattrs-include='user.*' --numeric-owner -xpzf "
        f"/tmp/{options.tarball} -C /cvmfs\n"
        f"    rm -f /tmp/{options.tarball}"
    )
    if mode == "embed":
        return (
            f"# Embeds the export {options.dest_base}/{options.fqrn} as /cvmfs/{options.fqrn}.\n"
            f"# Pack it next to this file first:\n#   {pack_command(options)}\n"
            f"Bootstrap: docker\nFrom: {options.base_image}\n\n"
            f"%files\n    {options.tarball} /tmp/{options.tarball}\n\n"
            f"%post\n{unpack}\n"
        )
    if mode == "build":
        work, export = "/build", "/export"
        files = [f"    {options.config_name} {work}/{options.config_name}"]
        if options.keys:
            files.append(f"    {options.keys} {work}/keys")
        if options.spec:
            files.append(f"    {options.spec} {work}/{options.fqrn}.spec")
        write_spec = "" if options.spec else f"    echo '/*' > {work}/{options.fqrn}.spec\n"
        return (
            f"# Exports {options.fqrn} at build time and installs it as /cvmfs/{options.fqrn}.\n"
            f"Bootstrap: docker\nFrom: {PYTHON_IMAGE}\nStage: export\n\n"
            "%files\n" + "\n".join(files) + "\n\n"
            f"%post\n    pip install --no-cache-dir {_q(options.package)}\n{write_spec}"
            f"    {_export_command(options, export, work)}\n"
            f"    shrinkwrap-async pack -x {export} -r {_q(options.fqrn)} --format tar "
            f"-o /tmp/{options.tarball}\n\n"
            f"Bootstrap: docker\nFrom: {options.base_image}\nStage: final\n\n"
            f"%files from export\n    /tmp/{options.tarball} /tmp/{options.tarball}\n\n"
            f"%post\n{unpack}\n"
        )
    if mode == "bind":
        return _bind_text("singularity", options)
    raise ValueError(mode)


def _bind_text(runtime: str, options: RecipeOptions) -> str:
    tree = f"{options.dest_base}/{options.fqrn}"
    target = f"/cvmfs/{options.fqrn}"
    docker = [
        "# Docker or Podman: mount the export read-only, no copy in the image",
        f"docker run --rm -it --volume {_q(tree)}:{target}:ro IMAGE",
        f"podman run --rm -it --volume {_q(tree)}:{target}:ro IMAGE",
    ]
    apptainer = [
        "# Apptainer/Singularity: bind the tree",
        f"apptainer exec --bind {_q(tree)}:{target}:ro IMAGE COMMAND",
        "# or one SquashFS file instead of many small files on a parallel file system:",
        f"#   {pack_command(options, 'squashfs')}",
        f"apptainer exec --bind {_q(options.squashfs)}:/cvmfs:image-src=/ IMAGE COMMAND",
    ]
    shifter = [
        "# Shifter (Slurm batch script header)",
        "#SBATCH --image=docker:IMAGE",
        f'#SBATCH --volume="{tree}:{target}"',
        "srun shifter COMMAND",
    ]
    sections = [docker, apptainer, shifter] if runtime == "docker" else [apptainer, shifter, docker]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def render_recipe(runtime: str, mode: str, options: RecipeOptions) -> str:
    if runtime == "docker":
        return docker_recipe(mode, options)
    if runtime == "singularity":
        return singularity_recipe(mode, options)
    raise ValueError(runtime)
