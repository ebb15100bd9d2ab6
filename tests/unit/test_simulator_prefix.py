"""Prefix identity, LRU eviction by tokens, instance choice and the TTFT formula (pure, no sleeping)."""
import hashlib
import random
import time

import orjson

import pytest

from chutes_lb.simulator.fleet_config import ChuteSpec
from chutes_lb.simulator.model import first_token_delay
from chutes_lb.simulator.openai_request import parse_request
from chutes_lb.simulator.prefix import Instance, PrefixCache, PrefixMemo, block_hashes, cacheable_blocks, choose_instance, prefix_keys
from chutes_lb.simulator.prompt import chat_prompt, completion_prompt, tokens_of
from chutes_lb.simulator.service import ChuteRuntime

pytestmark = pytest.mark.unit
BT = 4  # tokens per block in these tests: 16 bytes


def test_block_hashes_are_chained_and_only_full_blocks():
    a = b"x" * 40 + b"AAAA" * 10
    b = b"x" * 40 + b"BBBB" * 10
    ha, hb = block_hashes(a, BT), block_hashes(b, BT)
    assert len(ha) == len(a) // 16 == 5
    assert ha[:2] == hb[:2]  # the first 32 bytes are equal
    assert ha[2] != hb[2]  # block 2 (bytes 32..47) differs from byte 40 on
    assert all(x != y for x, y in zip(ha[2:], hb[2:]))  # and every later block, even where its own bytes match
    same_tail = b"y" * 16 + a[16:]  # block 0 differs, blocks 1.. carry the same bytes
    assert all(x != y for x, y in zip(block_hashes(same_tail, BT), ha))  # each hash covers everything before it
    assert block_hashes(b"short", BT) == [] and block_hashes(b"", BT) == []


def test_conversation_turns_share_their_prefix():
    tools = [{"type": "function", "function": {"name": "Read", "parameters": {"type": "object"}}}]
    turn1 = [{"role": "system", "content": "You are helpful. " * 40}, {"role": "user", "content": "read the file"}]
    turn2 = turn1 + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "Read", "arguments": '{"file_path": "/x"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "file content " * 30}, {"role": "user", "content": "thanks"}]
    p1, p2 = chat_prompt(turn1, tools), chat_prompt(turn2, tools)
    assert p2.startswith(p1)
    h1, h2 = block_hashes(p1, 16), block_hashes(p2, 16)
    assert h2[:len(h1)] == h1 and len(h2) > len(h1)
    # tool definitions and tool results are part of the prompt
    assert chat_prompt(turn1, None) != p1 and b"file content" in p2 and b'{"file_path": "/x"}' in p2
    # key order of the tools JSON does not matter
    reordered = [{"function": {"parameters": {"type": "object"}, "name": "Read"}, "type": "function"}]
    assert chat_prompt(turn1, reordered) == p1
    # an image part counts a fixed 64 bytes and its identity
    img = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 5000}}]}]
    img2 = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + "B" * 5000}}]}]
    assert len(chat_prompt(img)) < 100 and chat_prompt(img) != chat_prompt(img2)


def test_tokens_are_bytes_over_four():
    assert tokens_of(b"x" * 4000) == 1000 and tokens_of(b"") == 1
    assert tokens_of(completion_prompt([1, 2, 3])) == 3 and tokens_of(completion_prompt([[1, 2], [3]])) == 3
    with pytest.raises(ValueError):
        completion_prompt([-1])
    with pytest.raises(ValueError):
        completion_prompt({"a": 1})


def test_cacheable_blocks_keeps_the_last_token_computed():
    hashes = [b"a", b"b", b"c"]
    assert cacheable_blocks(hashes, 12, 4) == 2  # 12 tokens, 3 full blocks: the last is recomputed
    assert cacheable_blocks(hashes, 13, 4) == 3
    assert cacheable_blocks(hashes, 0, 4) == 0


def test_lru_eviction_by_tokens_keeps_prefixes():
    cache = PrefixCache(capacity_tokens=40, block_tokens=4)  # 10 blocks
    assert cache.capacity_blocks == 10
    a = block_hashes(b"a" * 16 * 6, 4)  # 6 blocks
    b = block_hashes(b"b" * 16 * 6, 4)
    cache.insert(a)
    assert cache.match(a) == 6 and cache.tokens == 24
    cache.insert(b)  # 12 blocks > 10: the two least recently used go, a's tail first
    assert len(cache) == 10 and cache.tokens == 40
    assert cache.match(b) == 6 and cache.match(a) == 4  # a keeps its first 4 blocks: still a prefix
    cache.insert(a)  # touching a makes b the oldest (b keeps 4 blocks)
    assert cache.match(b) == 4
    cache.insert(block_hashes(b"c" * 16 * 4, 4))
    assert cache.match(b) == 0  # b went, oldest first
    assert cache.match(a) == 6
    cache.resize(8)  # 2 blocks
    assert len(cache) == 2
    zero = PrefixCache(0, 4)
    zero.insert(a)
    assert len(zero) == 0 and zero.match(a) == 0


def test_a_prompt_larger_than_the_cache_keeps_its_first_blocks():
    cache = PrefixCache(capacity_tokens=12, block_tokens=4)
    h = block_hashes(b"z" * 16 * 8, 4)
    cache.insert(h)
    assert cache.match(h) == 3


def _insts(n, conc=4):
    return [Instance(i, 1000, 4) for i in range(n)]


def test_prefix_keys_are_chutes_md5_of_character_prefixes():
    text = "é" + "x" * 5000  # characters, not bytes: "é" is one character of two bytes
    assert prefix_keys(text) == [hashlib.md5(text[:n].encode()).digest() for n in (4096, 2048, 1024)]
    assert prefix_keys("y" * 1024) == [] and prefix_keys(None) == [] and len(prefix_keys("y" * 1025)) == 1


def test_keys_only_when_every_content_is_a_plain_string():
    strings = [{"role": "system", "content": "s" * 800}, {"role": "user", "content": "u" * 800}]
    parts = [strings[0], {"role": "user", "content": [{"type": "text", "text": "u" * 800}]}]
    p = parse_request(orjson.dumps({"model": "m", "messages": strings}), True)
    assert p.prefix_text == "s" * 800 + "u" * 800 and len(p.prefix_keys) == 1
    q = parse_request(orjson.dumps({"model": "m", "messages": parts}), True)
    assert q.prefix_text is None and q.prefix_keys == [] and q.prompt == p.prompt  # same KV-cache blocks, no routing key
    legacy = parse_request(orjson.dumps({"model": "m", "prompt": "z" * 3000}), False)
    assert len(legacy.prefix_keys) == 2
    assert parse_request(orjson.dumps({"model": "m", "prompt": [1, 2, 3]}), False).prefix_keys == []


def test_choice_is_fewest_connections_then_the_remembered_instance():
    rng = random.Random(3)
    insts, memo = _insts(3), PrefixMemo()
    keys = prefix_keys("k" * 3000)
    insts[0].in_flight, insts[1].in_flight, insts[2].in_flight = 2, 0, 1
    assert choose_instance(insts, 4, keys, memo, 0.0, rng) is insts[1]  # nothing remembered: fewest connections
    insts[1].in_flight = 3  # now the most loaded, but within 2 of the minimum (1)
    picks = []
    for _ in range(400):
        fresh = PrefixMemo()
        fresh.remember(keys[0], 1, 0.0)
        picks.append(choose_instance(insts, 4, keys, fresh, 1.0, rng).index)
    assert 0.90 < picks.count(1) / 400 < 0.99  # preferred 95% of the time
    # the memo keeps what was chosen last: a 5% miss moves the key to the other instance
    assert memo.lookup(keys, 1.0) == 1 and choose_instance(insts, 4, keys, memo, 1.0, random.Random(7)).index in (1, 2)
    insts[1].in_flight = 4  # full: never
    assert choose_instance(insts, 8, keys, PrefixMemo(), 0.0, rng) is insts[2]
    memo2 = PrefixMemo()
    memo2.remember(keys[0], 1, 0.0)
    assert choose_instance(insts, 4, keys, memo2, 1.0, rng) is insts[2]
    insts[1].in_flight, insts[2].in_flight = 4, 1
    memo3 = PrefixMemo()
    memo3.remember(keys[0], 1, 0.0)
    assert all(choose_instance(insts, 8, keys, memo3, 1.0, rng) is insts[2] for _ in range(50))  # 3 more than the minimum
    for i in insts:
        i.in_flight = 4
    assert choose_instance(insts, 4, keys, memo, 1.0, rng) is None


def test_the_memo_keeps_only_the_largest_key_for_its_ttl():
    rng = random.Random(1)
    insts, memo = _insts(4), PrefixMemo(ttl=600.0)
    turn1 = "c" * 5000
    got = choose_instance(insts, 4, prefix_keys(turn1), memo, 0.0, rng)
    assert len(memo) == 1  # only the largest key (4,096 characters)
    # the next turn extends the text: its 4,096-character key is the one remembered
    turn2 = turn1 + "d" * 5000
    assert all(choose_instance(insts, 4, prefix_keys(turn2), memo, 10.0, random.Random(i)) is got for i in range(5))
    assert len(memo) == 2  # the 8,192-character key of turn 2 joined
    # a text sharing only its first 2,048 characters: that key was never stored, so no preference
    other = turn1[:3000] + "e" * 3000
    assert memo.lookup(prefix_keys(other), 20.0) is None
    assert memo.lookup(prefix_keys(turn1), 599.0) == got.index and memo.lookup(prefix_keys(turn1), 601.0) is None


def test_ties_rotate_with_the_rng_and_spread_idle_load():
    rng = random.Random(5)
    insts = _insts(4)
    picks = {choose_instance(insts, 4, [], PrefixMemo(), 0.0, rng).index for _ in range(200)}
    assert picks == {0, 1, 2, 3}


def test_ttft_formula():
    # base 0.5 s, 20,000 uncached tokens at 10,000 tok/s, 2 of 8 slots busy, alpha 1: factor 1.25
    ttft, prefill = first_token_delay(0.5, 20_000, 10_000.0, 1.0, 2, 8, 1.0, 1.0)
    assert prefill == pytest.approx(2.0 * 1.25) and ttft == pytest.approx((0.5 + 2.0) * 1.25)
    hit, _ = first_token_delay(0.5, 64, 10_000.0, 1.0, 2, 8, 1.0, 1.0)
    assert hit < ttft / 4
    scaled, _ = first_token_delay(0.5, 20_000, 10_000.0, 2.0, 8, 8, 1.0, 0.01, queue_wait=0.3)
    assert scaled == pytest.approx(0.3 + (0.5 + 2.0) * 2.0 * 2.0 * 0.01)


def test_prefill_queue_is_fifo_per_instance():
    inst = Instance(0, 100, 4)
    assert inst.reserve_prefill(10.0, 2.0) == 0.0
    assert inst.reserve_prefill(10.5, 1.0) == pytest.approx(1.5)  # waits for the first to finish at 12
    assert inst.reserve_prefill(20.0, 1.0) == 0.0  # drained


def test_chute_runtime_routes_on_prefix_keys_and_rejects_a_share():
    spec = ChuteSpec("00000000-0000-4000-8000-000000000009", "m", instances=3, concurrency=2, block_tokens=4, cache_tokens=400)
    c = ChuteRuntime(spec, 0.0)
    rng = random.Random(2)
    h = block_hashes(b"p" * 16 * 10, 4)
    keys = prefix_keys("p" * 2000)
    first = c.admit(0.0, h, 41, rng, keys)
    first.instance.cache.insert(h)
    c.release(1.0, True, first.instance)
    again = c.admit(1.0, h, 41, random.Random(0), keys)  # the key memo finds the instance (rng 0: within the 95%)
    assert again.instance is first.instance and again.cached_blocks == 10
    assert (c.prompt_tokens, c.cached_tokens) == (82, 40)
    c.release(2.0, True, again.instance)
    # without keys (list contents) the choice ignores where the cache is: fewest connections, random ties
    homes = set()
    for i in range(30):
        adm = c.admit(2.0, h, 41, random.Random(i))
        homes.add(adm.instance.index)
        c.release(2.0, False, adm.instance)
    assert homes == {0, 1, 2}
    c.set_controls(c.controls.__class__(3, 2, reject_share=0.25), 2.0)
    statuses = [c.admit(3.0).status for _ in range(8)]
    assert statuses.count(429) == 2 and statuses[3] == 429 and statuses[7] == 429  # exactly a quarter, no rng
    w = c.ring.window(4.0, 300)
    assert w.rate_limited == 2 and w.requests > 10


def test_hashing_a_400kb_prompt_is_cheap():
    data = (b"def f(x):\n    return x * 2\n" * 16000)[:400_000]
    t0 = time.perf_counter()
    for _ in range(5):
        h = block_hashes(data, 64)
    per = (time.perf_counter() - t0) / 5
    assert len(h) == 400_000 // 256
    assert per < 0.02, per  # ~1 ms on one core; generous for a loaded CI machine


def test_shrinking_instances_keeps_in_flight_requests_counted():
    spec = ChuteSpec("00000000-0000-4000-8000-00000000000a", "m", instances=2, concurrency=1)
    c = ChuteRuntime(spec, 0.0)
    rng = random.Random(4)
    a, b = c.admit(0.0, rng=rng), c.admit(0.0, rng=rng)
    assert {a.instance.index, b.instance.index} == {0, 1} and c.admit(0.0, rng=rng).status == 429
    c.set_controls(c.controls.__class__(1, 1), 1.0)  # instance 1 leaves while busy
    assert len(c.instances) == 1 and c.in_flight == 2
    assert c.admit(1.0, rng=rng).status == 429  # its request still holds capacity
    gone = a if a.instance.index == 1 else b
    c.release(2.0, True, gone.instance)
    assert c.admit(2.0, rng=rng).status == 429  # instance 0 is still busy
    c.release(3.0, True, (b if gone is a else a).instance)
    assert c.admit(3.0, rng=rng).status == 0
    c.set_controls(c.controls.__class__(3, 1), 4.0)
    assert [i.index for i in c.instances] == [0, 1, 2] and c.instances[1].in_flight == 0


def test_cache_scale_multiplies_every_instance_cache():
    spec = ChuteSpec("00000000-0000-4000-8000-00000000000b", "m", instances=2, block_tokens=64, cache_tokens=500_000)
    c = ChuteRuntime(spec, 0.0, cache_scale=0.1)
    assert [i.cache.capacity_blocks * 64 for i in c.instances] == [49_984, 49_984]  # 50,000 rounded down to blocks
    c.set_controls(c.controls.__class__(3, 8, cache_tokens=1_000_000), 1.0)
    assert [i.cache.capacity_blocks for i in c.instances] == [1562] * 3
