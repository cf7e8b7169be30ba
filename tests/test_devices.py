"""The ``device`` setting: which device MACE, the committee, D3 and the engines get, and its refusals.

No GPU is lent to these tests: torch's view of one is patched where a test needs it.
"""

from __future__ import annotations

import pytest
import torch
from cli_runs import ilflows

from ilflows.execute import choose_device, engine_env, torch_device
from ilflows.settings import SettingsError, get_settings


@pytest.fixture
def device_setting(monkeypatch):
    """Set ILFLOWS_DEVICE for one test, settings reloaded before and after."""

    def choose(value: str) -> None:
        monkeypatch.setenv("ILFLOWS_DEVICE", value)
        get_settings.cache_clear()

    yield choose
    monkeypatch.delenv("ILFLOWS_DEVICE", raising=False)
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("setting", "gpu", "device"),
    [("auto", True, "cuda"), ("auto", False, "cpu"), ("cpu", True, "cpu"), ("cuda", True, "cuda")],
)
def test_the_setting_and_the_machine_choose_the_device(setting, gpu, device):
    assert choose_device(setting, cuda_available=gpu) == device


def test_cuda_without_a_gpu_names_the_setting_and_the_fix():
    with pytest.raises(SettingsError, match=r"device = 'cuda' \(ILFLOWS_DEVICE\).*setup\.sh --gpu"):
        choose_device("cuda", cuda_available=False)


def test_auto_follows_what_torch_sees(device_setting, monkeypatch):
    device_setting("auto")
    assert torch_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_device() == "cuda"


def test_cpu_hides_the_gpus_from_engines_and_auto_leaves_them(device_setting, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    device_setting("cpu")
    assert engine_env()["CUDA_VISIBLE_DEVICES"] == ""
    device_setting("auto")
    assert "CUDA_VISIBLE_DEVICES" not in engine_env()


def test_a_cuda_worker_without_a_gpu_refuses_before_taking_a_job(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    home = tmp_path / "home"
    run = ilflows(["worker"], home, timeout=120, ILFLOWS_DEVICE="cuda")
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "ILFLOWS_DEVICE" in lines[0] and "Traceback" not in run.stderr
    assert not home.exists()  # no queue opened


def test_an_unknown_device_is_one_line(tmp_path):
    run = ilflows(["worker"], tmp_path / "home", timeout=120, ILFLOWS_DEVICE="gpu")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "ILFLOWS_DEVICE" in run.stderr and "'auto'" in run.stderr
