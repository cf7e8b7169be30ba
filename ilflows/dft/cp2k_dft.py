"""CP2K DFT (Quickstep GPW) labels and short NVT AIMD through atomate2's input sets and custodian.

One fixed sequence per calculation: atomate2's CP2K input generator writes ``cp2k.inp`` with the
basis sets and pseudopotentials it resolved (``BASIS``, ``POTENTIAL`` beside it), one
:func:`ilflows.execute.run_custodian` call runs CP2K under custodian, whose handlers correct an
unconverged SCF and rerun (``spec.max_errors`` runs at most), and the output is parsed here.
atomate2's Makers are not used: inside a label job they would start a nested jobflow run,
their defaults are for spin-polarised solids (k-points, smearing) and their task document
fails on a closed-shell run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ilflows.dft import DFTSpec, MDRun, finish_label
from ilflows.dft.cp2k_output import OUTPUT, PROJECT, abort_message, md_labels, parse_cp2k_output
from ilflows.execute import EngineError, pinned_command, require_executable, run_custodian
from ilflows.schemas.frames import Frame
from ilflows.schemas.records import DFTResult
from ilflows.settings import get_settings

# The only CP2K data files indexed for pymatgen's basis/potential matching (3 s once, not 20 s
# for all of them); basis and pseudopotential names are looked up in these.
DATA_FILES = ("BASIS_MOLOPT", "GTH_BASIS_SETS", "GTH_POTENTIALS")
PRESETS = {
    "PBE": {"xc": {"PBE": {}}, "basis": "DZVP-MOLOPT-SR-GTH", "cutoff": 400.0, "d3_cutoff": None},
    # CP2K 2023.1's native B97-3c: without an explicit SCALE_X it aborts ("Unsupported scaling
    # factors"); D3(BJ) with the C9 and short-range bond terms completes the composite.  Basis,
    # cutoff and the D3 R_CUTOFF of 8 Å (pairs to 16 Å: CP2K sums to twice it) are the BMIM-BF4 paper's.
    "B97-3c": {
        "xc": {"BECKE97": {"PARAMETRIZATION": "B97-3C", "SCALE_X": 1.0, "SCALE_C": 1.0}},
        "basis": "TZVP-GTH",
        "cutoff": 800.0,
        "d3_cutoff": 8.0,
    },
}
# Parameters passed to pymatgen's DftSet under their own names.
DFTSET_KEYS = ("cutoff", "rel_cutoff", "ngrids", "eps_scf", "max_scf", "outer_max_scf", "ot", "minimizer")
DFTSET_KEYS += ("preconditioner", "algorithm", "rotation", "smearing", "spin_polarized")
PRINT_OFF = ("print_dos", "print_pdos", "print_mo_cubes", "print_v_hartree", "print_e_density")


def cp2k_data_dir() -> Path:
    """Return pymatgen's per-element index of :data:`DATA_FILES`, building it once in the cache.

    It is what ``pmg config --cp2k SOURCE DIR`` writes, limited to those files and kept under
    ``$XDG_CACHE_HOME/ilflows`` by the source files' paths, sizes and times, so a new CP2K gets a
    new index.  SOURCE is ``$CP2K_DATA_DIR`` when set (module and conda installs), else Debian's.

    Raises
    ------
    EngineError
        When a data file is missing.

    """
    from pymatgen.cli.pmg_config import setup_cp2k_data

    source = Path(os.environ.get("CP2K_DATA_DIR") or "/usr/share/cp2k")
    files = [source / name for name in DATA_FILES]
    if missing := [str(f) for f in files if not f.is_file()]:
        raise EngineError(f"CP2K data files {', '.join(missing)} not found; set CP2K_DATA_DIR")
    stamp = "".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns};" for f in files)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ilflows"
    target = cache / f"cp2k-pmg-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"
    if not target.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            (Path(tmp) / "src").mkdir()
            for f in files:
                (Path(tmp) / "src" / f.name).symlink_to(f)
            with contextlib.redirect_stdout(io.StringIO()):  # one line per element and file
                setup_cp2k_data([f"{tmp}/src", f"{tmp}/index"])
            # A rename is atomic: a worker racing this one either wins or finds the index built.
            with contextlib.suppress(OSError):
                (Path(tmp) / "index").rename(target)
    return target


class Cp2kDftSpec(DFTSpec):
    """``dft:`` of engine cp2k-dft (``max_scf``: inner iterations per outer step, default 50)."""

    runs_md: ClassVar[bool] = True
    engine: Literal["cp2k-dft"] = Field("cp2k-dft", description="CP2K Quickstep GPW.")
    eps_scf: float = Field(1e-6, gt=0, description="CP2K SCF convergence threshold, Hartree.")
    functional: Literal["PBE", "B97-3c"] | None = Field(
        None, description="Exchange-correlation functional (default PBE)."
    )
    dispersion: Literal["D3", "D3(BJ)", "none"] | None = Field(
        None,
        description="Grimme D3 correction, zero ('D3') or Becke-Johnson ('D3(BJ)') damping; default "
        "D3(BJ). B97-3c always uses its D3(BJ).",
    )
    dispersion_cutoff: float | None = Field(
        None,
        gt=0,
        description="D3 R_CUTOFF, Å; CP2K sums pairs to twice this (default: CP2K's 20 bohr; 8 for "
        "B97-3c, the BMIM-BF4 paper's input).",
    )
    basis: str | None = Field(
        None,
        description="Gaussian basis set name from BASIS_MOLOPT or GTH_BASIS_SETS (default "
        "DZVP-MOLOPT-SR-GTH; TZVP-GTH for B97-3c).",
    )
    pseudopotential: str | None = Field(
        None, description="GTH pseudopotential family from GTH_POTENTIALS (default GTH-PBE)."
    )
    cutoff: float | None = Field(
        None, gt=0, description="Density grid cutoff, Ry (default 400; 800 for B97-3c)."
    )
    rel_cutoff: float = Field(50.0, gt=0, description="Cutoff that maps Gaussians onto grid levels, Ry.")
    max_errors: int = Field(
        3,
        ge=1,
        description="Errors custodian may detect and correct (e.g. by another SCF solver) before a "
        "label fails; CP2K runs at most this many times.",
    )

    @model_validator(mode="after")
    def _b97_3c_has_its_own_d3(self) -> Cp2kDftSpec:
        if self.functional == "B97-3c" and self.dispersion not in (None, "D3(BJ)"):
            raise ValueError(
                f"dispersion {self.dispersion}: B97-3c includes its own D3(BJ) with C9 and "
                "short-range bond terms; leave dispersion unset"
            )
        return self


class Cp2kDft:
    """CP2K Kohn-Sham DFT on a periodic box: Gamma point, closed shell, OT, no smearing."""

    name = "cp2k-dft"
    section = Cp2kDftSpec

    def executables(self) -> list[tuple[str, str]]:
        """Return the CP2K command and the settings field that names it."""
        return [(get_settings().cp2k_cmd, "cp2k_cmd")]

    def parameters(self, spec: Cp2kDftSpec) -> dict:
        """Return every setting of a label: the spec's values over the functional's defaults."""
        functional = spec.functional or "PBE"
        preset = PRESETS[functional]
        return {
            "functional": functional,
            "dispersion": spec.dispersion or "D3(BJ)",
            "dispersion_cutoff": spec.dispersion_cutoff or preset["d3_cutoff"],
            "basis": spec.basis or preset["basis"],
            "pseudopotential": spec.pseudopotential or "GTH-PBE",
            "kpoints": "gamma",
            "stress_tensor": "ANALYTICAL" if spec.stress else "NONE",
            "max_errors": spec.max_errors,
            "cutoff": spec.cutoff or preset["cutoff"],
            "rel_cutoff": spec.rel_cutoff,
            "ngrids": 5,
            "eps_scf": spec.eps_scf,
            "max_scf": spec.max_scf or 50,
            "outer_max_scf": 10,
            "ot": True,
            "minimizer": "DIIS",
            "preconditioner": "FULL_SINGLE_INVERSE",
            "algorithm": "STRICT",
            "rotation": False,
            "smearing": False,
            "spin_polarized": False,
        }

    def write_inputs(self, frame: Frame, spec: Cp2kDftSpec, workdir: Path, extra: dict | None = None) -> dict:
        """Write ``cp2k.inp``, ``BASIS`` and ``POTENTIAL`` in ``workdir``; return the parameters.

        ``extra`` holds CP2K sections as nested dicts merged over the input; with a MOTION
        section the run is MD instead of a single point.

        Raises
        ------
        ValueError
            When the basis set or pseudopotential has no entry for an element of the frame.

        """
        from atomate2.cp2k.sets.base import recursive_update
        from atomate2.cp2k.sets.core import MDSetGenerator, StaticSetGenerator
        from pymatgen.core import Lattice, Structure
        from pymatgen.io.cp2k.inputs import GaussianTypeOrbitalBasisSet, GthPotential
        from pymatgen.io.cp2k.sets import DftSet

        p = self.parameters(spec)
        structure = Structure(Lattice(frame.cell), frame.species, frame.positions, coords_are_cartesian=True)
        wanted = {"basis": p["basis"], "potential": p["pseudopotential"]}
        with warnings.catch_warnings():  # an unmatched name only warns; it is refused below
            warnings.simplefilter("ignore")
            found = DftSet.get_basis_and_potential(
                structure, dict.fromkeys(structure.symbol_set, wanted), cp2k_data_dir=str(cp2k_data_dir())
            )
        for el in sorted(structure.symbol_set):
            if not isinstance(found[el]["basis"], GaussianTypeOrbitalBasisSet):
                raise ValueError(f"basis {p['basis']} has no entry for {el} in {', '.join(DATA_FILES)}")
            if not isinstance(found[el]["potential"], GthPotential):
                raise ValueError(f"pseudopotential {p['pseudopotential']} has no entry for {el}")
        dft = {"XC": {"XC_FUNCTIONAL": PRESETS[p["functional"]]["xc"]}}
        if p["dispersion"] != "none":
            pair = {
                "TYPE": "DFTD3" if p["dispersion"] == "D3" else "DFTD3(BJ)",
                "PARAMETER_FILE_NAME": "dftd3.dat",
                "REFERENCE_FUNCTIONAL": p["functional"],
            }
            if p["dispersion_cutoff"]:
                pair["R_CUTOFF"] = p["dispersion_cutoff"]
            if p["functional"] == "B97-3c":
                pair.update(CALCULATE_C9_TERM=True, SHORT_RANGE_CORRECTION=True)
            dft["XC"]["VDW_POTENTIAL"] = {"POTENTIAL_TYPE": "PAIR_POTENTIAL", "PAIR_POTENTIAL": pair}
        overrides = {
            "GLOBAL": {"PROJECT_NAME": PROJECT},
            "FORCE_EVAL": {"STRESS_TENSOR": p["stress_tensor"], "DFT": dft},
        }
        recursive_update(overrides, extra or {})
        # Every DftSet keyword comes from the parameters, so the input and the record never drift.
        settings = {k: p[k] for k in DFTSET_KEYS} | dict.fromkeys(PRINT_OFF, False)
        settings |= {
            "basis_and_potential": {el: found[el] for el in structure.symbol_set},
            "xc_functionals": list(PRESETS[p["functional"]]["xc"]),
            # pymatgen's activate_motion writes an unprintable THERMOSTAT; MOTION is an override.
            "activate_motion": False,
            "override_default_params": overrides,
        }
        generator = MDSetGenerator if "MOTION" in overrides else StaticSetGenerator
        # No KPOINTS in the config: Gamma point only.  Unsorted: forces come back in frame order.
        inputs = generator(user_input_settings=settings, config_dict={"cp2k_input": {}}, sort_structure=False)
        inputs.get_input_set(structure).write_input(workdir)
        return p

    def run_cp2k(self, workdir: Path, max_errors: int, handlers: list | None = None):
        """Run CP2K on ``cp2k.inp`` under custodian; see :func:`ilflows.execute.run_custodian` for the result.

        ``handlers`` default to custodian's CP2K handlers for a single point.
        """
        from custodian.cp2k import handlers as h
        from custodian.cp2k.jobs import Cp2kJob
        from custodian.custodian import Job

        class OwnCp2kJob(Cp2kJob):
            # Cp2kJob.terminate runs `killall cp2k.psmp`, every CP2K on the node; the base
            # Job's makes custodian stop only the process it started.
            terminate = Job.terminate

        if handlers is None:
            handlers = [
                h.StdErrHandler(std_err=str(Path(workdir) / "std_err.txt")),  # else read from the cwd
                h.UnconvergedScfErrorHandler(),
                h.DivergingScfErrorHandler(),
                h.FrozenJobErrorHandler(),
                h.AbortHandler(),
                h.NumericalPrecisionHandler(),
            ]
        job = OwnCp2kJob(pinned_command(get_settings().cp2k_cmd))
        return run_custodian(job, handlers, Path(workdir), max_errors)

    def label(self, frame: Frame, spec: Cp2kDftSpec, workdir: Path) -> DFTResult:
        """Label one frame; every failure but a missing executable returns ``converged=False``.

        Raises
        ------
        EngineError
            When the CP2K executable or CP2K's data files are not found.

        """
        workdir = Path(workdir)
        require_executable(get_settings().cp2k_cmd, "cp2k_cmd")
        try:
            parameters = self.write_inputs(frame, spec, workdir)
        except ValueError as err:
            failed = {"engine": self.name, "parameters": self.parameters(spec), "converged": False}
            return DFTResult(**failed, error=str(err), wall_time=0.0)
        wall, parameters["custodian"], failure = self.run_cp2k(workdir, spec.max_errors)
        text = (workdir / OUTPUT).read_text(errors="replace") if (workdir / OUTPUT).exists() else ""
        out = parse_cp2k_output(text)
        n_fixes = len(parameters["custodian"])
        error = None
        if abort := abort_message(text):
            error = f"cp2k aborted: {abort}"
        elif not out.scf_converged:
            scf = f"max_scf={parameters['max_scf']}, eps_scf={spec.eps_scf}"
            error = f"SCF not converged ({scf}, {n_fixes} corrections)"
        elif failure:
            error = f"custodian: {failure}"
        return finish_label(self.name, parameters, frame, spec, wall, out, error)

    def run_md(
        self,
        frame: Frame,
        spec: Cp2kDftSpec,
        workdir: Path,
        *,
        n_steps: int,
        temperature: float,
        timestep: float,
        every: int,
        seed: int,
        thermostat_timecon: float = 100.0,
    ) -> MDRun:
        """Run NVT AIMD (CSVR thermostat) from ``frame`` in one CP2K run, a label every ``every`` steps.

        Temperature in K, time step and thermostat time constant in fs; velocities are drawn at
        ``temperature`` with ``seed``.  Each written frame carries the run's own energy, forces
        and stress, converged or not by its own SCF.  No custodian handlers: their fixes restart
        a trajectory part-way.  A run that stops early keeps the steps it finished, with the
        reason as the run's error.

        Raises
        ------
        EngineError
            When the CP2K executable or CP2K's data files are not found.

        """
        workdir = Path(workdir)
        require_executable(get_settings().cp2k_cmd, "cp2k_cmd")
        md = {"ENSEMBLE": "NVT", "STEPS": n_steps, "TIMESTEP": timestep, "TEMPERATURE": temperature}
        md["THERMOSTAT"] = {"TYPE": "CSVR", "CSVR": {"TIMECON": thermostat_timecon}}
        each = {"EACH": {"MD": every}}
        extra = {
            "GLOBAL": {"SEED": seed},
            "MOTION": {"MD": md, "PRINT": {"TRAJECTORY": each, "FORCES": each}},
        }
        try:
            parameters = self.write_inputs(frame, spec, workdir, extra)
        except ValueError as err:
            return MDRun([], str(err))
        parameters.update(run_type="MD", n_steps=n_steps, temperature=temperature, timestep=timestep)
        parameters.update(every=every, thermostat="CSVR", thermostat_timecon=thermostat_timecon, seed=seed)
        wall, parameters["custodian"], failure = self.run_cp2k(workdir, 1, handlers=[])
        text = (workdir / OUTPUT).read_text(errors="replace") if (workdir / OUTPUT).exists() else ""
        snapshots = md_labels(self.name, parameters, spec, text, workdir, frame, every, wall / n_steps)
        error = None
        if abort := abort_message(text):
            error = f"cp2k aborted: {abort}"
        elif failure:
            error = f"custodian: {failure}"
        elif len(snapshots) < n_steps // every:
            error = f"{len(snapshots)} of {n_steps // every} MD frames in {OUTPUT}"
        return MDRun(snapshots, error)
