import numpy as np
import pytest
import soundfile as sf

from pipeline import config
from pipeline.audio import degrade
from pipeline.audio.fixtures import tone, write_background

SR = 24000


def band_energy(wave, lo, hi):
    spec = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(wave.size, 1 / SR)
    return spec[(freqs >= lo) & (freqs < hi)].sum()


def snr_db(clean, noisy):
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy.astype(np.float64) - clean) ** 2))


@pytest.fixture
def clip():
    return tone(2.0, SR, freq=440)[:, 0]


@pytest.fixture
def music():
    """Broadband, music-like: two harmonic tones over pink noise 20 dB down."""
    wave = tone(3.0, SR, freq=220)[:, 0] + tone(3.0, SR, freq=330, seed=1)[:, 0]
    return (wave + 0.1 * np.sqrt(np.mean(wave**2)) * degrade.colored_noise(wave.size, "pink", rng=2)).astype(np.float32)


@pytest.fixture(scope="module")
def background(tmp_path_factory):
    """Generated "recordings" of a busy room (stereo, 16 kHz: loading mixes them down and resamples) in a temp folder."""
    folder = tmp_path_factory.mktemp("background")
    write_background(folder, count=3, seconds=6.0, sr=16000, channels=2)
    return folder


@pytest.mark.parametrize("snr", [0, 10, 20])
@pytest.mark.parametrize("color", ["white", "pink", "brown"])
def test_noise_is_added_at_the_target_snr(clip, snr, color):
    noisy = degrade.add_noise(clip, snr, color, rng=1)
    measured = 10 * np.log10(np.mean(clip**2) / np.mean((noisy - clip) ** 2))
    assert measured == pytest.approx(snr, abs=0.01)


def test_pink_noise_falls_3db_per_octave():
    noise = degrade.colored_noise(2**18, "pink", rng=0)
    low, high = band_energy(noise, 500, 1000), band_energy(noise, 1000, 2000)
    assert 10 * np.log10(low / high) == pytest.approx(0, abs=0.5)  # equal energy per octave
    white = degrade.colored_noise(2**18, "white", rng=0)
    assert 10 * np.log10(band_energy(white, 1000, 2000) / band_energy(white, 500, 1000)) == pytest.approx(3, abs=0.5)


def test_filters_remove_what_they_should():
    noise = degrade.colored_noise(SR * 2, "white", rng=0)
    lp = degrade.lowpass(noise, SR, 3000)
    assert band_energy(lp, 6000, 12000) < 1e-3 * band_energy(noise, 6000, 12000)
    tel = degrade.apply(noise, SR, "telephone")
    assert band_energy(tel, 0, 100) < 1e-3 * band_energy(noise, 0, 100)
    assert band_energy(tel, 1000, 2000) > 0.8 * band_energy(noise, 1000, 2000)
    hp = degrade.highpass(noise, SR, 500)
    assert band_energy(hp, 0, 100) < 1e-3 * band_energy(noise, 0, 100)


def test_speed_gain_and_reverb(clip):
    fast = degrade.speed(clip, SR, 1.03)
    assert fast.size == pytest.approx(clip.size / 1.03, abs=2)
    peak = np.argmax(np.abs(np.fft.rfft(fast))) * SR / fast.size
    assert peak == pytest.approx(440 * 1.03, abs=2)
    assert np.allclose(degrade.gain(clip, -12), clip * 10 ** (-12 / 20), atol=1e-7)
    wet = degrade.reverb(clip, SR, rt60=0.5, wet=0.4, rng=0)
    assert wet.shape == clip.shape and np.mean(wet**2) == pytest.approx(np.mean(clip**2), rel=1e-3)
    assert not np.allclose(wet, clip)


def test_every_spec_of_the_shipped_plans_and_random_chain(clip, background):
    recordings = degrade.load_background(background, SR)
    plans = config.load_eval().queries.plans
    assert {"full", "demo"} <= set(plans)
    for plan in plans.values():
        for spec in plan.sets.values():
            out = degrade.apply(clip, SR, degrade.parse(spec), rng=0, background=recordings)
            assert out.dtype == np.float32 and np.isfinite(out).all() and abs(out.size - clip.size) <= 0.06 * clip.size
    with pytest.raises(ValueError, match="degradation spec 'nope'"):
        degrade.apply(clip, SR, "nope")
    a = degrade.random_degradation(clip, SR, rng=5, p=1.0)
    assert np.array_equal(a, degrade.random_degradation(clip, SR, rng=5, p=1.0))
    assert not np.array_equal(a, degrade.random_degradation(clip, SR, rng=6, p=1.0))
    assert np.array_equal(degrade.random_degradation(clip, SR, rng=5, p=0.0), clip)


# --- the spec grammar -----------------------------------------------------------------------------


def test_parse_gives_the_steps_in_order():
    d = degrade.parse(" background:5+reverb:0.6+telephone ")
    assert d.spec == "background:5+reverb:0.6+telephone" and d.needs_background
    assert d.steps == (degrade.Step("background", 5.0), degrade.Step("reverb", 0.6), degrade.Step("telephone"))
    assert degrade.parse("white:-5").steps == (degrade.Step("white", -5.0),) and not degrade.parse("white:-5").needs_background
    assert degrade.parse("clean").steps == (degrade.Step("clean"),)


@pytest.mark.parametrize("spec,message", [
    ("vinyl:3", "'vinyl:3': unknown kind 'vinyl' (known: clean, white, pink, brown, background, telephone, lowpass, highpass, reverb, mp3, ogg, "),
    ("pink:x", "'pink:x': SNR 'x' is not a number from -30 to 60 dB"),
    ("pink", "'pink': pink needs its SNR in dB, e.g. pink:0"),
    ("telephone:3", "'telephone:3': telephone takes no value"),
    ("reverb:9", "'reverb:9': RT60 '9' is not a number from 0.15 to 2 s"),
    ("speed:nan", "'speed:nan': factor 'nan' is not a number from 0.5 to 2"),
    ("pink:0+", "an empty step (a '+' at either end or two in a row)"),
    ("clean+gain:-6", "'clean' stands alone, not in a chain"),
    ("", "expected a string such as 'pink:0'"),
])
def test_bad_specs_are_one_line_errors_naming_the_spec_and_the_part(spec, message):
    with pytest.raises(ValueError) as err:
        degrade.parse(spec)
    assert str(err.value).startswith(f"degradation spec {spec!r}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_a_step_that_cannot_run_at_this_rate_names_the_spec(clip):
    with pytest.raises(ValueError, match=r"^degradation 'pink:0\+lowpass:15000': lowpass:15000: 15000 Hz is not below the Nyquist frequency of 24000 Hz"):
        degrade.apply(clip, SR, "pink:0+lowpass:15000")
    with pytest.raises(ValueError, match=r"^degradation 'mp3:8': mp3:8: MP3 at 44100 Hz takes 32-320 kbps, not 8$"):
        degrade.apply(clip, 44100, "mp3:8")
    with pytest.raises(ValueError, match=r"^degradation 'background:5': background:5: no background recordings"):
        degrade.apply(clip, SR, "background:5")


# --- what each kind does --------------------------------------------------------------------------


@pytest.mark.parametrize("spec,snr", [("white:-5", -5), ("pink:0", 0), ("brown:5", 5), ("white:10", 10), ("background:0", 0), ("background:5", 5)])
def test_noise_and_background_specs_hit_their_snr(music, background, spec, snr):
    out = degrade.apply(music, SR, spec, rng=3, background=degrade.load_background(background, SR))
    assert snr_db(music, out) == pytest.approx(snr, abs=0.5)


def test_band_limits_of_the_filter_specs():
    noise = degrade.colored_noise(SR * 2, "white", rng=0)
    tel = degrade.apply(noise, SR, "telephone")
    assert band_energy(tel, 0, 150) < 0.01 * band_energy(noise, 0, 150) and band_energy(tel, 6000, 12000) < 0.01 * band_energy(noise, 6000, 12000)
    assert band_energy(tel, 500, 3000) > 0.8 * band_energy(noise, 500, 3000)
    lp = degrade.apply(noise, SR, "lowpass:3000")
    assert band_energy(lp, 6000, 12000) < 1e-3 * band_energy(noise, 6000, 12000) and band_energy(lp, 0, 2000) > 0.9 * band_energy(noise, 0, 2000)
    hp = degrade.apply(noise, SR, "highpass:300")
    assert band_energy(hp, 0, 100) < 1e-3 * band_energy(noise, 0, 100) and band_energy(hp, 1000, 10000) > 0.9 * band_energy(noise, 1000, 10000)


@pytest.mark.parametrize("factor", [0.95, 0.98, 1.02, 1.05])
def test_speed_spec_changes_the_length_by_the_factor(clip, factor):
    out = degrade.apply(clip, SR, f"speed:{factor}")
    assert out.size == pytest.approx(clip.size / factor, abs=2)


@pytest.mark.parametrize("db", [-12, 6])
def test_gain_spec_scales_by_db(clip, db):
    assert 20 * np.log10(np.abs(degrade.apply(clip, SR, f"gain:{db}")).max() / np.abs(clip).max()) == pytest.approx(db, abs=0.01)


@pytest.mark.parametrize("rt60", [0.3, 0.6])
def test_room_impulse_responses_have_the_rt60_asked_for(rt60):
    irs = [degrade.room_impulse_response(rt60, SR, room) for room in range(3)]
    for ir in irs:
        assert degrade.decay_time(ir, SR) == pytest.approx(rt60, rel=0.05)
        assert np.argmax(np.abs(ir)) <= 60 and np.sum(ir**2) == pytest.approx(1.0)  # from the direct sound on, unit energy
    assert not np.array_equal(irs[0][:1000], irs[1][:1000])  # different rooms
    assert np.array_equal(irs[0], degrade.room_impulse_response(rt60, SR, 0))


def test_reverb_spec_lengthens_the_decay_and_keeps_the_rms(music):
    burst = music.copy()
    burst[SR:] = 0  # 1 s of sound, then 2 s of silence
    dry_tail = np.mean(burst[SR + SR // 10 : 2 * SR] ** 2)
    short, long = (degrade.apply(burst, SR, f"reverb:{rt60}", rng=1) for rt60 in (0.3, 1.0))
    for wet in (short, long):
        assert wet.shape == burst.shape and np.mean(wet**2) == pytest.approx(np.mean(burst**2), rel=1e-3)
    tail = [np.mean(w[SR + SR // 10 : 2 * SR] ** 2) / np.mean(w[: SR] ** 2) for w in (short, long)]
    assert dry_tail == 0 and 1e-5 < tail[0] < tail[1]  # sound after the music stopped: more of it in the longer room
    assert 10 * np.log10(tail[1] / tail[0]) > 10


@pytest.mark.parametrize("spec,kbps", [("mp3:32", 32), ("mp3:64", 64), ("ogg:0", None), ("ogg:5", None)])
def test_lossy_round_trip_keeps_length_alignment_and_spectrum(music, spec, kbps):
    out = degrade.apply(music, SR, spec)
    assert out.shape == music.shape and out.dtype == np.float32
    codec, value = spec.split(":")
    if kbps:
        assert len(degrade.encode(music, SR, codec, float(value))) * 8 / 3.0 / 1000 == pytest.approx(kbps, rel=0.15)
    lags = np.argmax(np.correlate(out[SR : SR + 4000], music[SR - 50 : SR + 4050], "valid"))
    assert lags == 50  # aligned with the input: no encoder delay left
    for lo, hi in [(100, 200), (200, 400), (400, 800), (800, 1600), (1600, 3200), (3200, 6400)]:  # octaves: within 3 dB (1 where the tones are)
        change = 10 * np.log10(band_energy(out, lo, hi) / band_energy(music, lo, hi))
        assert change == pytest.approx(0, abs=3.0 if lo < 200 or lo >= 1600 else 1.0)
    assert snr_db(music, out) > 15  # lossy (20-30 dB), but the same music


@pytest.mark.parametrize("codec", ["mp3:32", "ogg:0"])
def test_a_clip_louder_than_full_scale_comes_back_from_the_codec_unclipped(music, codec):  # libsndfile encodes floats as they are
    loud = music * np.float32(3 / np.abs(music).max())  # peaks at 3.0, as a loud source plus noise can
    out = degrade.apply(loud, SR, codec)
    assert np.abs(out).max() > 2 and snr_db(loud, out) > 15


def test_chains_apply_left_to_right_with_one_generator(music):
    chained = degrade.apply(music, SR, "white:10+telephone+gain:-6", rng=7)
    by_hand = degrade.gain(degrade.bandpass(degrade.add_noise(music, 10, "white", np.random.default_rng(7)), SR, 300, 3400), -6)
    assert np.array_equal(chained, by_hand)
    other_order = degrade.apply(music, SR, "telephone+white:10+gain:-6", rng=7)
    assert not np.allclose(chained, other_order)
    assert band_energy(other_order, 6000, 12000) > 100 * band_energy(chained, 6000, 12000)  # noise after the phone is not band-limited


@pytest.mark.parametrize("spec", ["pink:0", "background:5", "reverb:0.6", "background:5+reverb:0.6+telephone", "pink:5+reverb:0.4+mp3:32"])
def test_degradations_are_deterministic_per_seed(music, background, spec):
    recordings = degrade.load_background(background, SR)
    a = degrade.apply(music, SR, spec, rng=11, background=recordings)
    assert np.array_equal(a, degrade.apply(music, SR, degrade.parse(spec), rng=np.random.default_rng(11), background=recordings))
    if spec != "reverb:0.6":  # 8 rooms: two seeds may draw the same one
        assert not np.array_equal(a, degrade.apply(music, SR, spec, rng=12, background=recordings))


# --- background sound -----------------------------------------------------------------------------


def test_background_recordings_load_as_mono_at_the_rate_asked(background):
    recordings = degrade.load_background(background, SR)
    assert len(recordings) == 3 and all(r.ndim == 1 and r.dtype == np.float32 and r.size == pytest.approx(6 * SR, abs=2) for r in recordings)
    assert [f.name for f in degrade.background_files(background)] == ["room0.flac", "room1.flac", "room2.flac"]


def test_background_picks_seeded_segments_and_loops_short_recordings(music, background):
    recordings = degrade.load_background(background, SR)
    added = [degrade.add_background(music, recordings, 5, rng=seed) - music for seed in range(4)]
    assert len({a.tobytes() for a in added}) == 4  # another file or offset per seed
    short = [r[: SR] for r in recordings]  # 1 s recordings under a 3 s clip: one is looped
    out = degrade.add_background(music, short, 0, rng=1)
    assert snr_db(music, out) == pytest.approx(0, abs=0.5)
    noise = out - music
    assert np.allclose(noise[:SR], noise[SR : 2 * SR], atol=1e-6)  # the 1 s recording again and again


def test_sets_needing_background_are_skipped_with_a_reason_when_the_folder_is_missing_or_empty(background, tmp_path):
    sets = {"clean": "clean", "bg5": "background:5", "bar": "background:5+reverb:0.6+telephone", "pink0db": "pink:0"}
    runnable, skipped = degrade.split_plan(sets, tmp_path / "nowhere")
    assert list(runnable) == ["clean", "pink0db"] and list(skipped) == ["bg5", "bar"]
    assert skipped["bg5"] == f"'background:5' needs real background sound but {tmp_path / 'nowhere'} does not exist (bench/fetch_background.py fetches it)"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    assert "holds no .flac/.wav/.ogg recordings" in degrade.split_plan(sets, tmp_path / "empty")[1]["bar"]
    runnable, skipped = degrade.split_plan(sets, background)
    assert list(runnable) == list(sets) and not skipped and runnable["bar"] == degrade.parse("background:5+reverb:0.6+telephone")


def test_background_files_are_found_at_any_depth_and_resampled(tmp_path):
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "a.flac", np.zeros((SR, 1), np.float32), SR)
    sf.write(tmp_path / "sub" / "b.wav", np.zeros(SR // 2, np.float32), SR // 2)
    assert [f.name for f in degrade.background_files(tmp_path)] == ["a.flac", "b.wav"]
    assert [r.size for r in degrade.load_background(tmp_path, SR)] == [SR, SR]


def test_sets_that_cannot_run_at_the_sample_rate_are_skipped_with_the_reason(background):
    sets = {"lowpass10k": "lowpass:10000", "mp3-8k": "mp3:8", "pink0db": "pink:0", "bar": "background:5+reverb:0.3+telephone"}
    runnable, skipped = degrade.split_plan(sets, background, 16000)
    assert list(runnable) == ["mp3-8k", "pink0db", "bar"]  # MPEG-2 at 16 kHz has 8 kbps
    assert skipped == {"lowpass10k": "cannot run at 16000 Hz: degradation 'lowpass:10000': lowpass:10000: 10000 Hz is not below the Nyquist "
                                     "frequency of 16000 Hz audio"}
    assert list(degrade.split_plan(sets, background, 44100)[1]) == ["mp3-8k"]  # MPEG-1: 32-320 kbps


def test_query_sets_degrade_each_clip_with_its_own_seeded_generator(music, background, monkeypatch):
    from pipeline.evaluate import queries

    monkeypatch.setenv("CLOUDTUNE__QUERIES__PLAN", "demo")
    plan = queries.query_plan(config.load_eval().queries, background, SR)
    assert plan.name == "demo" and plan.lengths_s == (2.0, 5.0) and not plan.skipped and plan.background == []  # demo needs none
    assert plan.specs() == dict(config.load_eval().queries.plans["demo"].sets)
    clips = [queries.Clip("t1", 0.5, music), queries.Clip("t2", 1.0, music)]
    waves = queries.degrade(clips, "pink0db", plan.sets["pink0db"], 1234, SR)
    assert np.array_equal(waves[0], degrade.apply(music, SR, "pink:0", queries._rng(1234, "pink0db", "t1", 0.5)))
    assert not np.array_equal(waves[0], waves[1])  # same audio, another clip: other noise
    assert np.array_equal(waves[1], queries.degrade(clips, "pink0db", "pink:0", 1234, SR)[1])
    monkeypatch.setenv("CLOUDTUNE__QUERIES__PLAN", "full")
    full = queries.query_plan(config.load_eval().queries, background, SR)
    assert len(full.sets) == 30 and len(full.background) == 3
    assert list(queries.query_plan(config.load_eval().queries, None, SR).skipped) == ["background0db", "background5db", "bar-phone"]

