import numpy as np
import pytest
from conftest import sine, wav

from grym_worker import audio
from grym_worker.model import Audio, InvalidInput


def dominant(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


@pytest.mark.parametrize(
    "bits,float_format,extensible",
    [(8, False, False), (16, False, False), (24, False, False), (32, False, False), (32, True, False),
     (64, True, False), (16, False, True), (32, True, True)],
)
def test_every_wav_sample_format_decodes_to_the_same_signal(bits, float_format, extensible):
    tone = sine(440, 8000, 0.25)
    clip = audio.decode(Audio(wav(np.stack([tone, -tone], axis=1), 8000, bits, float_format, extensible)))
    assert clip.sample_rate == 8000 and clip.channels == 2
    tolerance = 2 / 128 if bits == 8 else 1e-4
    assert np.max(np.abs(clip.samples[:, 0] - tone)) < tolerance
    # The channels cancel when down-mixed.
    assert np.max(np.abs(clip.mono())) < tolerance


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"RIFF\x00\x00\x00\x00WAVEjunk", "no fmt chunk"),
    (b"not audio at all", "not a WAV file"),
])
def test_undecodable_audio_is_invalid_input_saying_why(data, reason):
    with pytest.raises(InvalidInput, match=reason):
        audio.decode(Audio(data))


def test_a_wav_with_no_samples_is_refused():
    with pytest.raises(InvalidInput, match="no samples"):
        audio.decode(Audio(wav(np.zeros((0, 1), np.float32), 16000)))


@pytest.mark.parametrize("rate_in,rate_out", [(44100, 16000), (48000, 16000), (8000, 16000), (16000, 22050), (11025, 22050)])
def test_resampling_keeps_a_tone_in_band(rate_in, rate_out):
    out = audio.resample(sine(440, rate_in, 1.0), rate_in, rate_out)
    assert abs(len(out) - rate_out) <= 1
    assert abs(dominant(out, rate_out) - 440) < 2
    reference = sine(440, rate_out, len(out) / rate_out)[: len(out)]
    assert np.max(np.abs(out[100:-100] - reference[100:-100])) < 1e-3


def test_downsampling_removes_what_the_new_rate_cannot_hold():
    out = audio.resample(sine(10_000, 48_000, 1.0), 48_000, 16_000)
    assert np.sqrt(np.mean(out[100:-100] ** 2)) < 1e-3
