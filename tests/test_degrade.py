import numpy as np
import pytest

from pipeline.audio import degrade
from pipeline.audio.fixtures import tone

SR = 24000


def band_energy(wave, lo, hi):
    spec = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(wave.size, 1 / SR)
    return spec[(freqs >= lo) & (freqs < hi)].sum()


@pytest.fixture
def clip():
    return tone(2.0, SR, freq=440)[:, 0]


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
    tel = degrade.apply_named("telephone", noise, SR)
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


def test_every_named_degradation_and_random_chain(clip):
    for name in degrade.QUERY_DEGRADATIONS:
        out = degrade.apply_named(name, clip, SR, rng=0)
        assert out.dtype == np.float32 and np.isfinite(out).all() and abs(out.size - clip.size) <= 0.04 * clip.size
    with pytest.raises(ValueError, match="degradation 'nope'"):
        degrade.apply_named("nope", clip, SR)
    a = degrade.random_degradation(clip, SR, rng=5, p=1.0)
    assert np.array_equal(a, degrade.random_degradation(clip, SR, rng=5, p=1.0))
    assert not np.array_equal(a, degrade.random_degradation(clip, SR, rng=6, p=1.0))
    assert np.array_equal(degrade.random_degradation(clip, SR, rng=5, p=0.0), clip)
