#!/usr/bin/env bash
# Idempotent set-up of ilflows on a fresh machine: the engines (Debian packages when root)
# and a Python 3.11 venv in .venv with torch 2.13.0 installed first (pip takes the CPU build
# from local disk; any other torch request would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ILFLOWS_VENV:-.venv}
PYTHON=${PYTHON:-python3.11}

# engine executables -> Debian packages that provide them
declare -A PKG=([cp2k.psmp]="cp2k cp2k-data" [packmol]="packmol")
missing=()
for exe in "${!PKG[@]}"; do
  command -v "$exe" >/dev/null 2>&1 || missing+=("${PKG[$exe]}")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing[*]} >/dev/null
  else
    echo "setup: missing executables from: ${missing[*]}" >&2
    echo "setup: load them first, e.g. 'module load cp2k packmol' on a cluster," >&2
    echo "setup: or 'conda install -c conda-forge cp2k packmol', or ask root for 'apt-get install ${missing[*]}'" >&2
    exit 1
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "setup: installing torch 2.13.0 (CPU build from local disk)"
  $PIP install torch==2.13.0
fi
if ! "$VENV/bin/python" -c "import ilflows, deepmd, mace, fireworks, jobflow, mongomock_persistence" 2>/dev/null \
   || [ pyproject.toml -nt "$VENV/.ilflows-installed" ]; then
  echo "setup: installing ilflows and its dependencies into $VENV"
  $PIP install -e ".[test]" 2>&1 | grep -v -E "^WARNING: Location|is ignored" || true
  "$VENV/bin/python" -c "import ilflows, deepmd, mace, fireworks, jobflow, mongomock_persistence"
  touch "$VENV/.ilflows-installed"
fi
echo "setup: ok ($("$VENV/bin/python" --version), $(command -v cp2k.psmp), $(command -v packmol))"
