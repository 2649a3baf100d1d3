#!/usr/bin/env python3
"""Regenerate the bundled profile ``tiny-cpu-calibrated``: build the tiny model, start
the CPU vLLM as the tests and benchmarks do, run ``thunder calibrate`` against it.

    python scripts/calibrate_bundled_profile.py            # about a minute on two cores
    python scripts/calibrate_bundled_profile.py -o other.json --repeats 5

Needs the vLLM venv (``scripts/install_vllm_cpu.sh``).
"""

from __future__ import annotations

import argparse
import platform
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from thunder.runtime.engines.launcher import VllmServer, VllmServerConfig, default_vllm_venv  # noqa: E402

DEFAULT_OUT = ROOT / "thunder" / "data" / "profiles" / "tiny-cpu-vllm032.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--name", default="tiny-cpu-calibrated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="thunder-calibrate-") as tmp:
        model = Path(tmp) / "tiny-llama"
        subprocess.run([str(default_vllm_venv() / "bin" / "python"), str(ROOT / "scripts" / "build_tiny_model.py"),
                        str(model)], check=True, capture_output=True, timeout=300)
        config = VllmServerConfig(model_dir=model, served_model_name="tiny-llama", log_path=Path(tmp) / "vllm.log")
        flags = (f"{config.describe()}; model from scripts/build_tiny_model.py; measured on {platform.machine()} "
                 f"with {os.cpu_count()} cores, no GPU, by scripts/calibrate_bundled_profile.py")
        with VllmServer(config) as server:
            thunder = Path(sys.executable).parent / "thunder"
            return subprocess.run([str(thunder), "calibrate", "--endpoint", server.url, "-o", str(args.output),
                                   "--repeats", str(args.repeats), "--name", args.name,
                                   "--serving-flags", flags]).returncode


if __name__ == "__main__":
    sys.exit(main())
