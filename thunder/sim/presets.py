"""Named engine presets (GPU x model, and measured CPU profiles) and ``load_engine_spec``.

Each preset states where its numbers come from in ``EngineSpec.sources``: datasheets and
model configs for the GPU presets (``gpu_preset`` turns them into a roofline step time),
measurements for the CPU ones. ``thunder.sim.h200_glm45`` holds the one preset fitted to
real GPU timings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from thunder.sim.h200_glm45 import glm45_h200_preset
from thunder.sim.step_time import (COMMON_SOURCES, GIB, H100_SXM, EngineSpec, GpuSpec, ModelSpec, StepTimeModel,
                                   gpu_preset, profile_from_dict)

GLM_46_FP8 = ModelSpec(
    name="GLM-4.6-FP8", total_params=355e9, active_params=32e9, layers=92,
    attention_heads=96, kv_heads=8, head_dim=128, weight_bytes_per_param=1.0,
    kv_bytes_per_element=2.0, routed_expert_params=336e9, experts=160, experts_per_token=8)

LLAMA_31_8B = ModelSpec(
    name="Llama-3.1-8B", total_params=8.03e9, active_params=8.03e9, layers=32,
    attention_heads=32, kv_heads=8, head_dim=128, weight_bytes_per_param=2.0)

QWEN3_8B = ModelSpec(
    name="Qwen3-8B", total_params=8.19e9, active_params=8.19e9, layers=36,
    attention_heads=32, kv_heads=8, head_dim=128, weight_bytes_per_param=2.0)

TINY_CPU = ModelSpec(
    name="tiny-llama-cpu", total_params=0.0011e9, active_params=0.0011e9, layers=2,
    attention_heads=4, kv_heads=4, head_dim=32, weight_bytes_per_param=2.0)


def _paper_preset() -> EngineSpec:
    gpu = GpuSpec("H100-SXM", 8, peak_flops_each=1979e12, **H100_SXM)
    return gpu_preset("paper-8xh100-glm46", gpu, GLM_46_FP8, overhead_s=0.004, sources={
        **COMMON_SOURCES,
        "model": "GLM-4.6 config.json: 92 layers, 96 heads, 8 KV heads, head_dim 128; 355B total / 32B "
                 "active params, 160 routed experts (8 per token), FP8 weights; KV in BF16 (vLLM default dtype)",
        "setup": "the paper's main setup: GLM-4.6-FP8, TP8 on one 8xH100 node (section 5.1)",
        "overhead": "4 ms per step for TP8 scheduling + all-reduce (assumed)",
    })


def _h100_8b_preset() -> EngineSpec:
    gpu = GpuSpec("H100-SXM", 1, peak_flops_each=989e12, **H100_SXM)
    return gpu_preset("h100-llama8b", gpu, LLAMA_31_8B, overhead_s=0.0015, sources={
        **COMMON_SOURCES,
        "model": "Llama-3.1-8B config.json: 32 layers, 32 heads, 8 KV heads, head_dim 128, BF16",
        "overhead": "1.5 ms per step scheduling/launch with CUDA graphs (assumed)",
    })


def _rtx5090_qwen3_8b_preset() -> EngineSpec:
    gpu = GpuSpec("RTX-5090", 1, memory_bytes_each=32 * GIB, peak_flops_each=104.8e12,
                  hbm_bytes_per_s_each=1.79e12)
    return gpu_preset("rtx5090-qwen3-8b", gpu, QWEN3_8B, overhead_s=0.0015, sources={
        **COMMON_SOURCES,
        "gpu": "NVIDIA RTX 5090: 32 GB GDDR7, 1.79 TB/s; 104.8 TFLOP/s BF16 tensor with FP32 accumulate "
               "(GeForce rate, half the FP16-accumulate peak)",
        "model": "Qwen3-8B config.json: 36 layers, 32 heads, 8 KV heads, head_dim 128, BF16",
        "setup": "the paper's ToolOrchestra serving setup: Qwen3-8B FP16 on one RTX 5090 (section 5.1)",
        "overhead": "1.5 ms per step scheduling/launch with CUDA graphs (assumed)",
    })


def _tiny_cpu_preset() -> EngineSpec:
    # 16 MiB of KV at 1 KiB/token = 16,384 tokens = 512 blocks of 32.
    step = StepTimeModel(overhead_s=1.8e-3, per_decode_seq_s=7.0e-5, per_prefill_token_s=2.5e-5,
                         model=TINY_CPU)
    return EngineSpec(name="tiny-cpu", num_blocks=512, block_size=32, max_num_seqs=256,
                      max_num_batched_tokens=4096, step_time=step, sources={
        "model": "Llama config: hidden 128, 2 layers, 4 heads, head_dim 32 -> 1 KiB KV per token (BF16)",
        "kv": "--kv-cache-memory-bytes 16 MiB -> 16,384 tokens, --block-size 32",
        "decode": "measured vLLM 0.32 CPU build, 2 cores, eager: 535 tok/s at 1 seq, 3.5k at 8, 7.9k at 32 "
                  "-> about 1.8 ms per step + 0.07 ms per sequence",
        "prefill": "measured 22-55k prompt tok/s -> 25 us per prefill token (middle of the range)",
        "max_num_batched_tokens": "4096 (assumed; calibrate to replace)",
    })


# Profiles measured by `thunder calibrate` and shipped as package data.
PROFILES_DIR = Path(__file__).resolve().parents[1] / "data" / "profiles"


def _bundled_profile(file_name: str) -> Callable[[], EngineSpec]:
    def load() -> EngineSpec:
        path = PROFILES_DIR / file_name
        return profile_from_dict(json.loads(path.read_text()), source=file_name)
    return load


PRESETS: dict[str, Callable[[], EngineSpec]] = {
    "paper-8xh100-glm46": _paper_preset,
    "8xh200-glm45": glm45_h200_preset,
    "h100-llama8b": _h100_8b_preset,
    "rtx5090-qwen3-8b": _rtx5090_qwen3_8b_preset,
    "tiny-cpu": _tiny_cpu_preset,
    # The tiny CPU model on vLLM 0.32's CPU build, measured (see the file's "calibration").
    "tiny-cpu-calibrated": _bundled_profile("tiny-cpu-vllm032.json"),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def load_engine_spec(name_or_path: str) -> EngineSpec:
    """A preset by name, or a JSON profile file (as written by ``save_profile``)."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]()
    path = Path(name_or_path)
    if not path.exists():
        raise ValueError(f"unknown preset {name_or_path!r}: known presets are {', '.join(preset_names())}, "
                         "or give a profile JSON file")
    return profile_from_dict(json.loads(path.read_text()), source=str(path))

