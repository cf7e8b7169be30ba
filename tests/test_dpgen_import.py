"""``ilflows import-dpgen``: DP-GEN parameters become a campaign spec that ilflows accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_runs import ROOT, ilflows

from ilflows.dpgen_import import spec_from_dpgen
from ilflows.schemas.campaign import CampaignSpec

PEER = ROOT.parent / "shared/peer-dpgen"
EXAMPLES = Path(__file__).parent / "data/dpgen"
PAIR = {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22}  # stands in for the examples' structures


def test_the_peer_set_up_becomes_a_spec_that_check_accepts(tmp_path):
    if not PEER.is_dir():
        pytest.skip(f"peer set-up not found at {PEER}")
    out = tmp_path / "x.yaml"
    proc = ilflows(
        [
            "import-dpgen",
            str(PEER / "param.json"),
            "--machine",
            str(PEER / "machine.json"),
            "--out",
            str(out),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "note: not mapped (ilflows has no such setting): ratio_failed" in proc.stdout
    assert "note: fp_task_min: dropped" in proc.stdout
    spec = yaml.safe_load(out.read_text())
    assert spec["system"] == {"ions": {"PYR14": 1, "BF4": 1}, "density": pytest.approx(0.22, abs=1e-3)}
    assert spec["dft"] == {"engine": "cp2k-xtb"}  # the template is an xTB input
    assert spec["initial"]["imports"][0]["path"] == str(PEER / "init_data/ip35")
    assert [Path(p).name for p in spec["explore"]["starts"]] == ["ip35.POSCAR", "ip35_b.POSCAR"]
    assert spec["explore"]["timestep"] == pytest.approx(0.5)  # 0.0005 ps
    # two equal model_devi_jobs: one stage run twice
    assert spec["explore"]["stages"] == [
        {
            "ensemble": "nvt",
            "temperature": 450.0,
            "pressure": 1.0,
            "n_steps": 500,
            "frame_every": 25,
            "max_iterations": 2,
        }
    ]
    assert spec["select"] == {"trust_lo": 0.05, "trust_hi": 1.5, "max_candidates": 10}
    assert spec["train"]["n_models"] == 4 and spec["train"]["overrides"]["training"]["numb_steps"] == 400
    check = ilflows(["check", str(out)], tmp_path)
    assert check.returncode == 0 and check.stdout.strip().endswith("ok (campaign peer-dpgen)"), check.stderr


@pytest.mark.parametrize(
    ("example", "engine"), [("param_CH4_cp2k.json", "cp2k-dft"), ("param_CH4_vasp.json", "vasp")]
)
def test_public_dp_gen_examples_map_every_key_or_say_why_not(example, engine):
    param = json.loads((EXAMPLES / example).read_text())
    spec, notes = spec_from_dpgen(param, EXAMPLES, "ch4", compositions=[PAIR, PAIR])
    assert spec["dft"] == {"engine": engine}
    assert spec["select"] == {"trust_lo": 0.05, "trust_hi": 0.15, "max_candidates": 20}
    assert any(
        "model_devi_e_trust_lo/hi 10000000000.0/10000000000.0: DP-GEN's way of turning it off" in n
        for n in notes
    )
    assert spec["explore"]["timestep"] == pytest.approx(2.0) and "starts" not in spec["explore"]
    # sys_idx 0 and 1 are the same composition: one stage of two iterations
    assert spec["explore"]["stages"] == [
        {
            "ensemble": "nvt",
            "temperature": 100.0,
            "pressure": 1.0,
            "n_steps": 3000,
            "frame_every": 10,
            "max_iterations": 2,
        }
    ]
    assert "type_map" not in spec["train"]["overrides"]["model"]
    assert any(
        n.startswith("type_map ['H', 'C']: ilflows' models type the elements of system") for n in notes
    )
    dropped = next((n for n in notes if n.startswith("not mapped")), "")
    assert ("ratio_failed" in dropped) == (engine == "cp2k-dft") and "fp_task_min" not in dropped
    CampaignSpec.model_validate(spec)  # a spec ilflows accepts


def test_a_non_ionic_liquid_is_refused_naming_the_molecule(tmp_path):
    import ase.io
    from ase.build import molecule

    box = molecule("CH4")
    box.set_cell([8, 8, 8])
    box.center()
    ase.io.write(tmp_path / "POSCAR", box, format="vasp")
    param = {"sys_configs": [["POSCAR"]], "model_devi_jobs": [{"sys_idx": [0], "temps": [300, 400]}]}
    with pytest.raises(ValueError, match=r"POSCAR: a molecule C1H4 \(atom 1\) is no ion of the library"):
        spec_from_dpgen(param, tmp_path, "ch4")
    spec, notes = spec_from_dpgen(param, tmp_path, "x", compositions=[PAIR])
    assert "model_devi_jobs.0: temps [300, 400] press [1.0]: the first of each is used" in notes
