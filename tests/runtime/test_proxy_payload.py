"""Request rewriting, usage extraction and Prometheus parsing: the pure parts of the proxy."""

from __future__ import annotations

import json

import pytest

from thunder.runtime.engines.prometheus import parse_text
from thunder.runtime.engines.vllm import capacity_from, stats_from
from thunder.runtime.payload import TAIL_BYTES, BadRequest, Tail, find_usage, prepare


def test_untouched_bodies_are_forwarded_byte_for_byte():
    raw = b'{"model": "m",  "messages": []}'
    prepared = prepare(raw, "p1")
    assert prepared.body is raw and prepared.program_id == "p1" and not prepared.stream


def test_program_fields_are_stripped_and_streams_ask_for_usage():
    raw = json.dumps({"model": "m", "program_id": "p", "program_release": True, "stream": True,
                      "stream_options": {"continuous_usage_stats": False}}).encode()
    prepared = prepare(raw, None)
    sent = json.loads(prepared.body)
    assert prepared.program_id == "p" and prepared.release and prepared.stream
    assert sent == {"model": "m", "stream": True,
                    "stream_options": {"continuous_usage_stats": False, "include_usage": True}}


@pytest.mark.parametrize("raw,header", [
    (b'{"program_id": ""}', None), (b'{"program_id": true}', None), (b"{}", " "),
    (b'{"program_release": "yes", "program_id": "p"}', None), (b'{"program_release": true}', None),
])
def test_bad_program_fields_are_rejected(raw, header):
    with pytest.raises(BadRequest):
        prepare(raw, header)


def test_usage_is_the_last_unescaped_usage_object():
    text = json.dumps({"choices": [{"message": {"content": 'fake "usage": {"prompt_tokens": 99}'}}],
                       "usage": {"prompt_tokens": 7, "completion_tokens": 2,
                                 "prompt_tokens_details": {"cached_tokens": 4}}})
    assert find_usage(text.encode()).__repr__() == "Usage(prompt_tokens=7, completion_tokens=2, cached_tokens=4)"
    stream = (b'data: {"choices":[{"delta":{}}],"usage":null}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,'
              b'"prompt_tokens_details":null}}\n\ndata: [DONE]\n\n')
    usage = find_usage(stream)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (5, 1, 0)
    assert find_usage(b'{"error": "too long"}') is None
    assert find_usage(b'{"usage": {"prompt_tokens": ') is None


def test_tail_keeps_at_least_the_last_tail_bytes():
    tail = Tail()
    for index in range(100):
        tail.add(bytes([65 + index % 26]) * 1000)
    data = tail.data()
    assert TAIL_BYTES <= len(data) < TAIL_BYTES + 1000
    assert data.endswith(bytes([65 + 99 % 26]) * 1000)


def test_prometheus_parsing_handles_vllm_lines_escapes_and_junk():
    text = "\n".join([
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
        'vllm:cache_config_info{block_size="32",num_gpu_blocks="512",engine="0"} 1.0',
        'vllm:num_requests_running{engine="0",model_name="m"} 3.0',
        'vllm:num_requests_running{engine="1",model_name="m"} 2.0 1712345678000',
        'vllm:prefix_cache_hits_total{model_name="a \\"quoted\\" name"} 40',
        'vllm:prefix_cache_queries_total 100',
        "this line is junk",
        'vllm:kv_cache_usage_perc{engine="0"} NaN',
    ])
    samples = parse_text(text)
    assert capacity_from(samples) == (512 * 32, 32)
    stats = stats_from(samples)
    assert stats.running_requests == 5 and stats.prefix_hits_tokens == 40 and stats.kv_usage == 0.0
    assert samples[3].labels["model_name"] == 'a "quoted" name'


def test_context_estimate_is_exact_for_token_id_prompts():
    assert prepare(json.dumps({"prompt": list(range(300))}).encode(), None).estimate_tokens == 300
    raw = json.dumps({"messages": [{"role": "user", "content": "x" * 4000}]}).encode()
    assert prepare(raw, None).estimate_tokens == len(raw) // 4


def test_group_id_comes_from_the_body_or_the_header_and_is_not_forwarded():
    body = json.dumps({"model": "m", "messages": [], "program_id": "p", "group_id": "g", "max_tokens": 32}).encode()
    prepared = prepare(body, None)
    assert (prepared.group_id, prepared.max_tokens) == ("g", 32)
    assert "group_id" not in json.loads(prepared.body)
    from_header = prepare(json.dumps({"model": "m", "max_completion_tokens": 8}).encode(), "p",
                          header_group_id="g2")
    assert (from_header.group_id, from_header.max_tokens) == ("g2", 8)


@pytest.mark.parametrize("body, header, message", [
    ({"program_id": "p", "group_id": "a"}, "b", "differs from X-Program-Group"),
    ({"program_id": "p", "group_id": ["a"]}, None, "group_id must be a string"),
    ({"group_id": "a"}, None, "group_id needs a program_id"),
])
def test_bad_group_ids_are_rejected_by_name(body, header, message):
    with pytest.raises(BadRequest, match=message) as caught:
        prepare(json.dumps(body).encode(), None, header_group_id=header)
    assert caught.value.param == "group_id"


def test_a_max_tokens_that_is_not_a_positive_integer_is_left_to_the_backend():
    assert prepare(json.dumps({"max_tokens": "many"}).encode(), None).max_tokens is None
    assert prepare(json.dumps({"max_tokens": True}).encode(), None).max_tokens is None
