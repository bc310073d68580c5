import json

import numpy as np
import pytest

from pipeline.audio import io as audio_io
from pipeline.audio.synth import build_catalog
from pipeline.config import RVQSettings, defaults
from pipeline.tokenize import Tokenizer, mask_id, pad_id, vocab_size
from pipeline.tokenize.files import TokenFileError, load_tokens, save_tokens
from pipeline.tokenize.rvq import RVQCodec

SMALL = defaults(RVQSettings, levels=4, codebook_size=32, kmeans_iters=10, holdout_ratio=0.25)


@pytest.fixture(scope="module")
def waves(tmp_path_factory):
    out = build_catalog(tmp_path_factory.mktemp("cat"), tracks=6, seconds=6, seed=3, sample_rate=24000, channels=1, shared_motif_ratio=0.5)
    return [audio_io.load(p)[0] for p in sorted(out.glob("*.flac"))]


@pytest.fixture(scope="module")
def codec(waves):
    return RVQCodec.train(waves[:4], 24000, SMALL, [f"t{i}" for i in range(4)])


def test_reserved_ids_are_outside_the_codebook():
    assert pad_id(1024) == 1024 and mask_id(1024) == 1025 and vocab_size(1024) == 1026
    assert len({pad_id(8), mask_id(8), *range(8)}) == 10


def test_rvq_codes_shape_range_and_protocol(codec, waves):
    assert isinstance(codec, Tokenizer)
    codes = codec.encode(waves[0], 24000)
    assert codes.dtype == np.int64 and codes.shape == (4, waves[0].size // 1920)
    assert codes.min() >= 0 and codes.max() < 32
    assert codec.frame_rate == 12.5 and codec.num_quantizers == 4 and codec.codebook_size == 32
    assert codec.decode(codes).shape == (codes.shape[1], 64 * 2)
    batch = codec.encode_batch(waves[:3], 24000)
    assert all(np.array_equal(b, codec.encode(w, 24000)) for b, w in zip(batch, waves[:3], strict=True))
    with pytest.raises(ValueError, match="takes 24000 Hz"):
        codec.encode(waves[0], 16000)


def test_mel_snr_rises_with_levels_on_held_out_audio(codec, waves):
    z = np.concatenate([codec.normalized_frames(w) for w in waves[4:]])
    snr = codec.snr_by_level(z)
    assert len(snr) == 4 and all(b > a for a, b in zip(snr, snr[1:], strict=False))
    # decode inverts the standardization: more levels, closer log-mel
    frames = codec.features(waves[4])
    codes = codec.encode(waves[4], 24000)
    errs = [np.abs(codec.decode(codes, q) - frames).mean() for q in (1, 4)]
    assert errs[1] < errs[0]


def test_torch_and_faiss_search_agree(codec, waves):
    z = codec.normalized_frames(waves[0])
    import torch

    assert np.array_equal(codec._quantize_faiss(z), codec._quantize_torch(torch.from_numpy(z)).numpy())


def test_codec_artifact_round_trip_and_version(codec, waves, tmp_path):
    codec.save(tmp_path / "c")
    again = RVQCodec.load(tmp_path / "c")
    assert again.version == codec.version and again.version.startswith("rvq-")
    assert np.array_equal(again.encode(waves[1], 24000), codec.encode(waves[1], 24000))
    retrained = RVQCodec.train(waves[:4], 24000, SMALL, [f"t{i}" for i in range(4)])
    assert retrained.version == codec.version and np.array_equal(retrained.codebooks, codec.codebooks)
    (tmp_path / "c" / "codec.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable rvq codec"):
        RVQCodec.load(tmp_path / "c")


def test_too_little_audio_for_the_codebook_is_a_clear_error(waves):
    with pytest.raises(ValueError, match="training frames for a codebook of 4096"):
        RVQCodec.train(waves[:1], 24000, defaults(RVQSettings, codebook_size=4096), ["a"])


META = {"track_id": "t", "source": "s", "sample_rate": 24000, "duration_s": 1.0, "chunk_index": 0, "num_chunks": 1, "token_shape": [],
        "backend": "rvq", "codec_version": "v"}


@pytest.mark.parametrize("ext", ["npz", "pt"])
def test_token_files_round_trip_keep_code_zero(tmp_path, ext):
    codes = np.array([[0, 5, 1023], [0, 0, 7]], dtype=np.int64)
    path = save_tokens(tmp_path / f"a.{ext}", codes, META)
    back, meta = load_tokens(path)
    assert back.dtype == np.int64 and np.array_equal(back, codes)
    assert meta["token_shape"] == [2, 3] and meta["track_id"] == "t"
    assert [p.name for p in tmp_path.iterdir()] == [f"a.{ext}"]


@pytest.mark.parametrize("ext", ["npz", "pt"])
def test_corrupt_token_file_is_reported_by_name(tmp_path, ext):
    path = save_tokens(tmp_path / f"a.{ext}", np.zeros((2, 50), np.int64), META)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(TokenFileError, match=f"^{path}: corrupt token file"):
        load_tokens(path)
    with pytest.raises(TokenFileError, match="token file not found"):
        load_tokens(tmp_path / f"missing.{ext}")


def test_token_metadata_must_match_codes(tmp_path):
    with pytest.raises(ValueError, match="lacks track_id"):
        save_tokens(tmp_path / "a.npz", np.zeros((1, 1)), {})
    path = tmp_path / "b.npz"
    np.savez(path, codes=np.zeros((2, 3), np.int16), meta=np.array(json.dumps({**META, "token_shape": [2, 4]})))
    with pytest.raises(TokenFileError, match="metadata says"):
        load_tokens(path)
