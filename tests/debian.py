"""Install Debian packages a test needs, when they are missing and we are root."""

from __future__ import annotations

import os
import shutil
import subprocess


def apt_install(packages: list[str], tools: list[str]) -> str | None:
    """Make sure ``tools`` are on PATH, installing ``packages`` with apt-get when root.

    Returns None when every tool is there, otherwise a one-line reason for the test to skip.
    """
    if all(shutil.which(tool) for tool in tools):
        return None
    if os.geteuid() != 0:
        return f"{', '.join(packages)} not installed and only root can apt-get install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # the timeout only guards against a hung apt: installs take 10-30 s on a warm mirror
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{' '.join(cmd)}` failed: {exc}"
        if proc.returncode:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            return f"`{' '.join(cmd)}` failed with status {proc.returncode}: {last}"
    missing = [tool for tool in tools if not shutil.which(tool)]
    return f"still missing after apt-get install: {', '.join(missing)}" if missing else None
