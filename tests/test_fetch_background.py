"""bench/fetch_background.py's logic without downloading anything: the pool a recording lands in (the hash rule, and the forced
train pool of the later sources, which leaves the eval pool as it was) and the joining of short recordings into clips."""

import importlib.util
import sys

import numpy as np

from pipeline import config

_spec = importlib.util.spec_from_file_location("fetch_background", config.PROJECT_ROOT / "bench" / "fetch_background.py")
fb = sys.modules["fetch_background"] = importlib.util.module_from_spec(_spec)  # registered: its dataclass looks itself up
_spec.loader.exec_module(fb)


def test_pool_hash_rule_and_forced_train_pool():
    paths = [f"usr/share/x/{i}.ogg" for i in range(40)]
    hashed = fb.Source("pkg", "c", "GPL-2+", ("*",))
    forced = fb.Source("pkg", "c", "GPL-2+", ("*",), pool="train")
    assert {fb.pool_for(hashed, p) for p in paths} == {"eval", "train"}
    assert [fb.pool_for(hashed, p) for p in paths] == [fb.pool_of("pkg", p) for p in paths]
    assert {fb.pool_for(forced, p) for p in paths} == {"train"}
    # the sources that were there before the train-only ones keep the hash rule; every joined source is train-only
    assert all(s.pool is None and not s.join for s in fb.SOURCES[:8])
    assert all(s.pool == "train" for s in fb.SOURCES if s.join)


def _word(seed: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pad = np.zeros(int(0.2 * fb.SR), np.float32)
    return np.concatenate([pad, rng.standard_normal(int(seconds * fb.SR)).astype(np.float32) * 0.1, pad])


def test_join_clips_one_voice_and_babble():
    members = [(f"w{i}.ogg", _word(i, 1.0)) for i in range(40)]
    one = fb.join_clips(members, "seed", clip_seconds=10, min_seconds=5)
    again = fb.join_clips(members, "seed", clip_seconds=10, min_seconds=5)
    assert len(again) == len(one) and all(np.array_equal(a, b) and n == m for (a, n), (b, m) in zip(one, again))  # seeded
    used = [n for _, names in one for n in names]
    assert len(used) == len(set(used)) and set(used) <= {p for p, _ in members}
    for clip, names in one:
        assert 5 * fb.SR <= len(clip) <= 10 * fb.SR
        rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2)))
        assert abs(20 * np.log10(rms) + 23) < 0.1 or np.max(np.abs(clip)) <= fb.PEAK + 1e-6
        # one voice: 1 s words (silence trimmed) and 0.1-0.5 s pauses, so about 7-9 words in 10 s
        assert 6 <= len(names) <= 10
    babble = fb.join_clips(members, "seed", clip_seconds=5, min_seconds=2, voices=(3, 6))
    assert all(len(names) >= 3 * 4 for _, names in babble[:-1])  # 3-6 voices of 4 words each in 5 s
    assert sum(len(names) for _, names in babble) == len(members)


def test_join_clips_leaves_out_a_short_last_clip():
    members = [(f"w{i}.ogg", _word(i, 1.0)) for i in range(3)]
    assert fb.join_clips(members, "seed", clip_seconds=30, min_seconds=5) == []
