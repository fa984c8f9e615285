"""The replica's resident voices: full and adapter voices in separate LRUs, by count and by bytes."""

from __future__ import annotations

from voicefleet.serve.voice_cache import VoiceCache


def test_adapter_voices_never_evict_full_ones_and_follow_their_own_limits():
    cache: VoiceCache[str] = VoiceCache(max_full=2, max_adapter=3, adapter_bytes=250)
    cache.put("alice@1", "A", adapter=False)
    cache.put("bob@1", "B", adapter=False)
    for i in range(5):
        cache.put(f"lora-{i}@1", f"L{i}", adapter=True, nbytes=50)
    stats = cache.stats()
    assert stats["full"] == ["alice@1", "bob@1"] and stats["full_evictions"] == 0
    assert stats["adapter"] == ["lora-2@1", "lora-3@1", "lora-4@1"] and stats["adapter_evictions"] == 2
    assert cache.get("lora-0@1") is None and cache.get("lora-2@1") == "L2"  # a hit refreshes it
    cache.put("big@1", "X", adapter=True, nbytes=200)  # over the byte budget: the oldest go
    assert cache.stats()["adapter"] == ["lora-2@1", "big@1"] and cache.stats()["adapter_bytes"] == 250
    cache.put("carol@1", "C", adapter=False)
    assert cache.get("alice@1") is None and cache.get("bob@1") == "B"


def test_a_voice_alone_over_the_budget_stays_resident():
    cache: VoiceCache[str] = VoiceCache(max_full=1, max_adapter=10, adapter_bytes=10)
    cache.put("huge@1", "H", adapter=True, nbytes=100)
    assert cache.get("huge@1") == "H"
    cache.put("huge@1", "H2", adapter=True, nbytes=100)  # a reload replaces, never double counts
    assert cache.stats()["adapter_bytes"] == 100
