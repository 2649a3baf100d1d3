"""Step-time model of the simulated vLLM replica, and the engine profile format.

One engine step runs a batch: ``prefill_tokens`` new prompt tokens (chunks)
plus ``decode_seqs`` sequences generating one token each, reading
``context_tokens`` of KV. Its duration is

    overhead_s
    + per_prefill_token_s * prefill_tokens + per_decode_seq_s * decode_seqs
    + per_context_token_s * context_tokens
    + per_prefill_pair_s * prefill_attention_pairs
    + per_admitting_step_s * (1 if the step admits a request)  (linear part)
    + max(compute_s, memory_s)                                   (roofline part)

``compute_s`` = (2 * active params * batch tokens + attention FLOPs) / usable FLOP/s,
``memory_s`` = (weight bytes read + KV bytes read) / usable bytes/s. GPU
presets use the roofline part with stated efficiencies; the tiny CPU preset
(and every calibrated profile) uses the linear part, fitted to measurements.
KV capacity follows from memory left after weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import numpy as np

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    total_params: float
    active_params: float
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    weight_bytes_per_param: float
    kv_bytes_per_element: float = 2.0
    routed_expert_params: float = 0.0  # MoE: params in routed experts (all layers)
    experts: int = 0
    experts_per_token: int = 0

    @property
    def kv_bytes_per_token(self) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes_per_element

    @property
    def weight_bytes(self) -> float:
        return self.total_params * self.weight_bytes_per_param

    def weight_bytes_read(self, batch_tokens: float) -> float:
        """Bytes of weights one step streams: for MoE only the experts the batch touches."""
        if self.experts == 0 or batch_tokens <= 0:
            return self.weight_bytes
        dense = (self.total_params - self.routed_expert_params) * self.weight_bytes_per_param
        touched = 1.0 - (1.0 - self.experts_per_token / self.experts) ** batch_tokens
        return dense + self.routed_expert_params * self.weight_bytes_per_param * touched


@dataclass(frozen=True, slots=True)
class GpuSpec:
    name: str
    count: int
    memory_bytes_each: float
    peak_flops_each: float
    hbm_bytes_per_s_each: float


@dataclass(frozen=True, slots=True)
class StepTimeModel:
    """Duration of one engine step; see the module docstring for the formula."""

    overhead_s: float = 0.0
    per_prefill_token_s: float = 0.0
    per_decode_seq_s: float = 0.0
    per_context_token_s: float = 0.0
    # Causal attention of a prefill chunk is quadratic: n new tokens attend to
    # (offset + n/2) keys each. Measured on vLLM's CPU build it dominates prompts
    # beyond ~1k tokens (thunder calibrate); 0 keeps prefill linear.
    per_prefill_pair_s: float = 0.0
    # A step that admits requests into the running batch (new, or resumed after a
    # preemption) costs more, mostly once per step: vLLM's model runner rebuilds its batch
    # state. On the tiny CPU model a step admitting one request ran 2-3 ms over the rest
    # of the model whatever its prompt or cache hit, one admitting 16 about 4-7 ms
    # (benchmarks/engine_steps.py times every step inside vLLM).
    per_admitting_step_s: float = 0.0
    flops_per_s: float = 0.0  # usable (peak x efficiency); 0 disables the roofline part
    bytes_per_s: float = 0.0
    model: ModelSpec | None = None
    # Usable rate for streaming weights, where it differs from KV reads; 0: ``bytes_per_s``.
    # On GLM-4.5-FP8 / 8x H200 the fused MoE kernels read the experts a batch touches at a small
    # fraction of HBM bandwidth: a prefill step (every expert touched) took over 100 ms against
    # 20 ms for a one-sequence decode step, while decode barely slowed with 60k tokens of context
    # (benchmarks/gpu_fidelity.py fits it on one worker's calls).
    weight_bytes_per_s: float = 0.0

    def _attention_flops(self, query_tokens: float, key_tokens: float) -> float:
        m = self.model
        assert m is not None
        return 4.0 * m.layers * m.attention_heads * m.head_dim * query_tokens * key_tokens

    def step_s(self, prefill_tokens: int, prefill_attention_pairs: float, decode_seqs: int,
               context_tokens: int, joined: int = 0) -> float:
        """``prefill_attention_pairs`` = sum over chunks of n * (offset + n/2); ``joined``
        = requests this step admits into the running batch."""
        t = (self.overhead_s + self.per_prefill_token_s * prefill_tokens
             + self.per_decode_seq_s * decode_seqs + self.per_context_token_s * context_tokens
             + self.per_prefill_pair_s * prefill_attention_pairs
             + (self.per_admitting_step_s if joined else 0.0))
        if self.flops_per_s and self.model is not None:
            batch = prefill_tokens + decode_seqs
            flops = (2.0 * self.model.active_params * batch
                     + self._attention_flops(1.0, prefill_attention_pairs + context_tokens))
            kv = self.model.kv_bytes_per_token * (context_tokens + prefill_tokens)
            t += max(flops / self.flops_per_s, self._memory_s(self.model.weight_bytes_read(batch), kv))
        return t

    def _memory_s(self, weight_bytes: Any, kv_bytes: Any) -> Any:
        """Seconds to stream the weights and the KV (floats or arrays)."""
        if self.weight_bytes_per_s:
            return weight_bytes / self.weight_bytes_per_s + kv_bytes / self.bytes_per_s
        return (weight_bytes + kv_bytes) / self.bytes_per_s

    def step_function(self) -> Callable[..., float]:
        """``step_s`` with the model's constants folded in (the engine calls it every step).
        The arithmetic is ``step_s``'s, operation by operation, so results are identical."""
        m = self.model
        if not (self.flops_per_s and m is not None):
            return self.step_s  # linear only: nothing to fold
        overhead, per_token, per_seq = self.overhead_s, self.per_prefill_token_s, self.per_decode_seq_s
        per_context, per_pair, per_admitting = self.per_context_token_s, self.per_prefill_pair_s, \
            self.per_admitting_step_s
        flops_per_s, bytes_per_s, weight_bytes_per_s = self.flops_per_s, self.bytes_per_s, self.weight_bytes_per_s
        two_active = 2.0 * m.active_params
        attention = 4.0 * m.layers * m.attention_heads * m.head_dim * 1.0  # _attention_flops(1.0, x) / x
        kv_per_token = m.kv_bytes_per_token
        moe = m.experts != 0
        weight_bytes = m.weight_bytes
        dense = (m.total_params - m.routed_expert_params) * m.weight_bytes_per_param
        routed = m.routed_expert_params * m.weight_bytes_per_param
        miss = 1.0 - m.experts_per_token / m.experts if moe else 0.0

        def roofline_step_s(prefill_tokens: int, pairs: float, decode_seqs: int, context_tokens: int,
                            joined: int = 0) -> float:
            t = (overhead + per_token * prefill_tokens + per_seq * decode_seqs
                 + per_context * context_tokens + per_pair * pairs + (per_admitting if joined else 0.0))
            batch = prefill_tokens + decode_seqs
            flops = two_active * batch + attention * (pairs + context_tokens)
            weights = dense + routed * (1.0 - miss ** batch) if moe and batch > 0 else weight_bytes
            kv = kv_per_token * (context_tokens + prefill_tokens)
            if weight_bytes_per_s:  # as _memory_s: weights at their own rate
                memory_s = weights / weight_bytes_per_s + kv / bytes_per_s
            else:
                memory_s = (weights + kv) / bytes_per_s
            return t + max(flops / flops_per_s, memory_s)
        return roofline_step_s

    def decode_run_s(self, decode_seqs: int, context_tokens: int, steps: int) -> np.ndarray:
        """Durations of ``steps`` pure-decode steps; the context grows by ``decode_seqs`` each."""
        context = context_tokens + decode_seqs * np.arange(steps, dtype=np.float64)
        t = (self.overhead_s + self.per_decode_seq_s * decode_seqs) + self.per_context_token_s * context
        if self.flops_per_s and self.model is not None:
            m = self.model
            flops = 2.0 * m.active_params * decode_seqs + self._attention_flops(1.0, 1.0) * context
            memory = self._memory_s(m.weight_bytes_read(decode_seqs), m.kv_bytes_per_token * context)
            t = t + np.maximum(flops / self.flops_per_s, memory)
        return t


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """A replica: KV geometry, scheduler limits, step-time model, and sources."""

    name: str
    num_blocks: int
    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    step_time: StepTimeModel
    sources: dict[str, str] = field(default_factory=dict)
    # Time a request spends outside engine steps before the engine sees it (HTTP,
    # API server, IPC); the engine serves others meanwhile. 0 for the GPU presets,
    # where it is small against step times; measured by ``thunder calibrate``.
    request_overhead_s: float = 0.0
    # Time each request holds the replica's front end (HTTP, the API server's parsing and
    # output processing: one process serving one request at a time) before the engine
    # sees it. Requests that finish in the same step queue there, which a constant
    # delay misses. 0 for the GPU presets; ``thunder calibrate`` measures it.
    frontend_s: float = 0.0
    # Front-end service time per prompt token, added to ``frontend_s`` for each request: the
    # API server renders the chat template and tokenizes the whole prompt on every call, so
    # an agent's 20k-token history costs it on every step, cached or not. On GLM-4.5-FP8 /
    # 8x H200 the time to first token grew by about 7 us per prompt token at a fixed number of
    # new tokens (benchmarks/gpu_fidelity.py). 0 for every other preset.
    frontend_per_prompt_token_s: float = 0.0
    # Time from a request's last token to the client holding the whole response (the API
    # server's last output processing: detokenizing, the tool-call parser, the final usage
    # chunk); its blocks are free at once. On GLM-4.5-FP8 / 8x H200 a call's decode time was
    # about 0.35 s longer than its tokens' steps at one worker (benchmarks/gpu_fidelity.py).
    finish_s: float = 0.0
    # Admit a waiting request only if its whole prompt fits the free blocks, not just its
    # first prefill chunk: vLLM's ``scheduler_reserve_full_isl``, on by default in 0.32
    # (added in 2026). Without it a long prompt is admitted on its first chunk and
    # preempted when a later chunk finds the cache full. Off for the presets that model
    # earlier engines (the paper's); ``thunder calibrate`` turns it on.
    admit_full_prompt: bool = False

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def with_blocks(self, num_blocks: int) -> "EngineSpec":
        return replace(self, num_blocks=num_blocks)


def kv_blocks_after_weights(gpu: GpuSpec, model: ModelSpec, block_size: int,
                            memory_utilization: float, reserve_bytes_each: float) -> int:
    """KV blocks that fit in what vLLM leaves after weights and activations."""
    usable = gpu.count * (gpu.memory_bytes_each * memory_utilization - reserve_bytes_each)
    free = usable - model.weight_bytes
    if free <= 0:
        raise ValueError(f"{model.name} does not fit on {gpu.count}x {gpu.name}")
    return int(free // (model.kv_bytes_per_token * block_size))


H100_SXM = dict(
    memory_bytes_each=80 * GIB,  # H100 SXM5 80 GB HBM3 (NVIDIA H100 datasheet)
    hbm_bytes_per_s_each=3.35e12,  # datasheet: 3.35 TB/s
)
# Efficiencies are assumptions, not measurements: typical achieved fractions of
# peak for large GEMMs (~50%) and for weight/KV streaming (~70%) in vLLM.
MFU = 0.5
MBU = 0.7


def gpu_preset(name: str, gpu: GpuSpec, model: ModelSpec, overhead_s: float,
                sources: dict[str, str]) -> EngineSpec:
    block_size = 16  # vLLM's default block size on CUDA
    blocks = kv_blocks_after_weights(gpu, model, block_size, memory_utilization=0.9,
                                     reserve_bytes_each=4 * GIB)
    step = StepTimeModel(overhead_s=overhead_s,
                         flops_per_s=gpu.count * gpu.peak_flops_each * MFU,
                         bytes_per_s=gpu.count * gpu.hbm_bytes_per_s_each * MBU, model=model)
    return EngineSpec(name=name, num_blocks=blocks, block_size=block_size, max_num_seqs=256,
                      max_num_batched_tokens=8192, step_time=step, sources=sources)


COMMON_SOURCES = {
    "gpu": "NVIDIA H100 SXM5 datasheet: 80 GB HBM3, 3.35 TB/s, 989 TFLOP/s dense BF16, 1979 dense FP8",
    "efficiency": f"assumed MFU {MFU}, MBU {MBU} (typical achieved fractions; not measured here)",
    "memory": "gpu_memory_utilization 0.9 (vLLM default), 4 GiB per GPU reserved for activations and graphs (assumed)",
    "block_size": "16 (vLLM default on CUDA); max_num_seqs 256, max_num_batched_tokens 8192 (vLLM v1 defaults)",
}


def profile_to_dict(spec: EngineSpec) -> dict[str, Any]:
    step = asdict(spec.step_time)
    return {"name": spec.name, "num_blocks": spec.num_blocks, "block_size": spec.block_size,
            "max_num_seqs": spec.max_num_seqs, "max_num_batched_tokens": spec.max_num_batched_tokens,
            "step_time": step, "request_overhead_s": spec.request_overhead_s,
            "frontend_s": spec.frontend_s, "frontend_per_prompt_token_s": spec.frontend_per_prompt_token_s,
            "finish_s": spec.finish_s,
            "admit_full_prompt": spec.admit_full_prompt, "sources": spec.sources}


def profile_from_dict(data: dict[str, Any], source: str = "profile") -> EngineSpec:
    try:
        step_data = dict(data["step_time"])
        model = step_data.pop("model", None)
        step = StepTimeModel(**step_data, model=ModelSpec(**model) if model else None)
        return EngineSpec(name=data["name"], num_blocks=int(data["num_blocks"]),
                          block_size=int(data["block_size"]), max_num_seqs=int(data["max_num_seqs"]),
                          max_num_batched_tokens=int(data["max_num_batched_tokens"]),
                          step_time=step, sources=dict(data.get("sources", {})),
                          request_overhead_s=float(data.get("request_overhead_s", 0.0)),
                          frontend_s=float(data.get("frontend_s", 0.0)),
                          frontend_per_prompt_token_s=float(data.get("frontend_per_prompt_token_s", 0.0)),
                          finish_s=float(data.get("finish_s", 0.0)),
                          admit_full_prompt=_flag(data.get("admit_full_prompt", False), "admit_full_prompt"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: invalid engine profile: {exc}") from exc


def _flag(value: Any, field_name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{field_name} must be true or false, got {value!r}")
    return value
