"""GLM-4.5-FP8 on one node of 8x H200: the preset checked against real GPU timings.

The geometry and roofline come from datasheets and the model's config, as for the other
GPU presets (``thunder.sim.presets``); the free coefficients (fixed step cost, prefill
cost per token, the weight-streaming rate of the MoE kernels, the API server's costs) are
fitted by ``benchmarks/gpu_fidelity.py`` on the recorded 1-worker SWE-agent runs, and the
32-worker runs check them (docs/fidelity.md, sections 5 and 6).
"""

from __future__ import annotations

from dataclasses import replace

from thunder.sim.step_time import COMMON_SOURCES, MBU, EngineSpec, GpuSpec, ModelSpec, gpu_preset

# GLM-4.5: 3 dense + 89 MoE layers; routed experts 89 layers x 160 x (3 x 5120 x 1536) = 335.9B params.
GLM_45_FP8 = ModelSpec(
    name="GLM-4.5-FP8", total_params=355e9, active_params=32e9, layers=92,
    attention_heads=96, kv_heads=8, head_dim=128, weight_bytes_per_param=1.0,
    kv_bytes_per_element=2.0, routed_expert_params=89 * 160 * 3 * 5120 * 1536, experts=160, experts_per_token=8)


H200_SXM = dict(
    memory_bytes_each=141e9,  # H200 SXM 141 GB HBM3e (NVIDIA H200 datasheet)
    hbm_bytes_per_s_each=4.8e12,  # datasheet: 4.8 TB/s
    peak_flops_each=1979e12,  # datasheet: 1,979 TFLOP/s dense FP8 (3,958 with sparsity), as the H100 SXM
)

_GLM45_H200_SOURCES = {
    **COMMON_SOURCES,
    "gpu": "NVIDIA H200 SXM datasheet: 141 GB HBM3e, 4.8 TB/s, 1,979 TFLOP/s dense FP8",
    "model": "GLM-4.5 (zai-org/GLM-4.5 README: 355B total / 32B active params; the public Megatron training "
             "config for GLM-4.5-355B-A32B in slime, scripts/models/glm4.5-355B-A32B.sh: 92 layers = 3 dense + 89 MoE, hidden 5120, 96 heads, 8 KV heads, head_dim 128, "
             "160 routed experts of 1536 (8 per token) + 1 shared), FP8 weights; KV in BF16 (vLLM default)",
    "setup": "the recorded SWE-agent runs: vLLM serving GLM-4.5-FP8 on one node of 8x H200, TP8 (assumed: "
             "one engine over the node), shared/data/agent-runs/swe-agent-glm45-h200",
    "block_size": "16 (vLLM default on CUDA); max_num_batched_tokens 8192 (vLLM's default for the OpenAI "
                  "server; the runs do not record it, assumed); max_num_seqs 256 (never binds at 32 workers)",
}


def glm45_h200_datasheet() -> EngineSpec:
    """GLM-4.5-FP8 on 8x H200 from datasheet numbers alone (the roofline, 4 ms per step assumed):
    the model every GPU preset had before it was checked against a real GPU."""
    gpu = GpuSpec("H200-SXM", 8, **H200_SXM)
    return gpu_preset("8xh200-glm45-datasheet", gpu, GLM_45_FP8, overhead_s=0.004, sources={
        **_GLM45_H200_SOURCES, "overhead": "4 ms per step for TP8 scheduling + all-reduce (assumed)"})


# Fitted by benchmarks/gpu_fidelity.py on the 1-worker runs only (5 runs, 205 calls); the
# 32-worker runs are the check (docs/fidelity.md, "Against a real GPU").
GLM45_H200_FIT = dict(frontend_s=0.01185, frontend_per_prompt_token_s=3.039e-06,
                      overhead_s=0.01579, per_prefill_token_s=5.313e-05,
                      per_context_token_s=0.0, per_prefill_pair_s=0.0,
                      finish_s=0.2877, weight_bytes_per_s=11050000000000.0)


def glm45_h200_preset() -> EngineSpec:
    """The 8xh200-glm45 preset: the datasheet geometry and roofline plus the fitted terms."""
    base = glm45_h200_datasheet()
    fit = GLM45_H200_FIT
    step = replace(base.step_time, overhead_s=fit["overhead_s"], per_prefill_token_s=fit["per_prefill_token_s"],
                   per_context_token_s=fit["per_context_token_s"], per_prefill_pair_s=fit["per_prefill_pair_s"],
                   weight_bytes_per_s=fit["weight_bytes_per_s"])
    return replace(base, name="8xh200-glm45", step_time=step, frontend_s=fit["frontend_s"],
                   frontend_per_prompt_token_s=fit["frontend_per_prompt_token_s"], finish_s=fit["finish_s"], sources={
        **base.sources,
        "overhead": "fitted (benchmarks/gpu_fidelity.py, 1-worker runs): "
                    f"{fit['overhead_s'] * 1e3:.1f} ms per step (TP8 all-reduces, kernel launches, scheduling)",
        "weights": f"fitted: weights streamed at {fit['weight_bytes_per_s'] / 1e12:.2f} TB/s "
                   f"({fit['weight_bytes_per_s'] / (8 * 4.8e12):.1%} of the 8 GPUs' HBM bandwidth; KV reads keep MBU "
                   f"{MBU}): the fused MoE kernels; one worker's calls bound it only loosely (docs/fidelity.md)",
        "step_time": "roofline (datasheet, MFU/MBU as assumed) plus fitted linear terms on the 1-worker runs: "
                     f"per context token read {fit['per_context_token_s']:.3g} s (decode attention), per prefill "
                     f"token {fit['per_prefill_token_s']:.3g} s, per prefill pair {fit['per_prefill_pair_s']:.3g} s",
        "frontend": f"fitted: {fit['frontend_s'] * 1e3:.1f} ms per request + "
                    f"{fit['frontend_per_prompt_token_s'] * 1e6:.2f} us per prompt token (template and tokenizer), "
                    f"one first-come-first-served API server; {fit['finish_s'] * 1e3:.0f} ms from the last token "
                    "to the whole response (final output processing)",
    })
