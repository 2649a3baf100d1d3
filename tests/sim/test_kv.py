"""The compressed prefix cache behaves like vLLM's block pool on small cases."""

from thunder.sim.kv import PrefixCache

A = ("p", "a", 0)
B = ("p", "b", 0)
SYS = ("s", "sys")


def admit(cache: PrefixCache, key, prompt: int, shared_key=None, shared_blocks: int = 0, now: float = 0.0):
    hit = cache.lookup(key, shared_key, shared_blocks, prompt)
    hit_tokens = (hit.shared_hit_blocks + hit.program_hit_blocks) * cache.block_size
    total = -(-prompt // cache.block_size)
    need = hit.shared_missing_blocks + (total - shared_blocks) - hit.program_hit_blocks
    assert cache.can_allocate(need, now, reserved=hit.free_blocks_reused)
    cache.acquire(key, shared_key, shared_blocks, hit)
    assert cache.allocate(need, now)
    cache.check()
    return hit_tokens, total - shared_blocks


def test_empty_cache_hits_nothing():
    cache = PrefixCache(num_blocks=10, block_size=16)
    assert admit(cache, A, 100)[0] == 0
    assert cache.used_blocks == 7


def test_only_full_blocks_are_cached_and_the_last_prompt_token_is_recomputed():
    cache = PrefixCache(num_blocks=10, block_size=16)
    _, held = admit(cache, A, 100)
    cache.release(A, held, computed_tokens=100, shared_key=None, shared_blocks=0)
    assert cache.free_cached_blocks == 6  # 100 // 16 full blocks; the partial block is freed
    assert cache.used_blocks == 0
    # Same 96-token prefix again: 96 // 16 = 6 blocks, but at most (97 - 1) // 16 = 6 -> 96 tokens.
    assert admit(cache, A, 97)[0] == 96


def test_a_prompt_equal_to_the_cached_prefix_still_computes_its_last_block():
    cache = PrefixCache(num_blocks=10, block_size=16)
    _, held = admit(cache, A, 64)
    cache.release(A, held, 64, None, 0)
    assert admit(cache, A, 64)[0] == 48


def test_eviction_takes_the_least_recent_sequence_tail_first():
    cache = PrefixCache(num_blocks=10, block_size=16)
    _, held_a = admit(cache, A, 64)
    cache.release(A, held_a, 64, None, 0)  # A: 4 cached blocks, oldest
    _, held_b = admit(cache, B, 64)
    cache.release(B, held_b, 64, None, 0)  # B: 4 cached blocks
    assert cache.empty_blocks == 2
    assert cache.allocate(4, 0.0)  # 2 empty + 2 evicted from A's tail
    assert cache.cached_blocks(A) == 2 and cache.cached_blocks(B) == 4
    assert cache.evicted_blocks == 2
    cache.check()


def test_a_shared_prefix_is_held_once_by_concurrent_requests():
    cache = PrefixCache(num_blocks=20, block_size=16)
    admit(cache, A, 100, SYS, shared_blocks=4)  # 7 blocks: 4 shared + 3 own
    hit, own = admit(cache, B, 100, SYS, shared_blocks=4)
    assert hit == 64  # B hits the 4 shared blocks A is using
    assert own == 3
    assert cache.used_blocks == 4 + 3 + 3


def test_the_shared_head_outlives_the_program_tail_in_the_free_queue():
    cache = PrefixCache(num_blocks=8, block_size=16)
    _, held = admit(cache, A, 100, SYS, shared_blocks=4)
    cache.release(A, held, 100, SYS, 4)
    assert list(cache.free_queue) == [A, SYS]
    assert cache.allocate(3, 0.0)  # 1 empty, 2 evicted: both from A
    assert cache.cached_blocks(SYS) == 4


def test_pinned_blocks_are_not_evicted_until_they_expire():
    cache = PrefixCache(num_blocks=8, block_size=16)
    _, held = admit(cache, A, 128)
    cache.release(A, held, 128, None, 0)
    assert cache.pin(A, until_s=10.0)
    assert not cache.allocate(8, now_s=5.0)
    assert cache.cached_blocks(A) == 8
    assert cache.allocate(8, now_s=10.0)  # expired: evictable again
    assert cache.cached_blocks(A) == 0
    cache.check()


def test_an_expired_pin_of_the_admitted_program_is_not_counted_twice():
    cache = PrefixCache(num_blocks=8, block_size=16)
    _, held = admit(cache, A, 128)
    cache.release(A, held, 128, None, 0)
    cache.pin(A, until_s=1.0)
    # A comes back after its pin expired: it hits its own 8 blocks and needs 5 more,
    # which must come from elsewhere; there are none (its own blocks cannot count twice).
    hit = cache.lookup(A, None, 0, 200)
    assert hit.program_hit_blocks == 8
    assert not cache.can_allocate(13 - 8, now_s=2.0, reserved=hit.free_blocks_reused, own_key=A)
    assert cache.can_allocate(0, now_s=2.0, reserved=hit.free_blocks_reused, own_key=A)
