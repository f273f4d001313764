import numpy as np
import pytest
from conftest import sine, wav

from grym_worker import audio
from grym_worker.model import Audio, Chunk, InvalidInput, Output, Request
from grym_worker.models.vad import SileroVad


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    model = SileroVad()
    model.load()
    return model


def run(model, data: bytes, **parameters):
    stream = model.infer_stream(Request(task_id="t", task_type="voice_activity", input=Audio(data), parameters=parameters))
    chunks = []
    try:
        while True:
            chunks.append(next(stream))
    except StopIteration as stop:
        return chunks, stop.value


def test_a_spoken_sentence_is_one_stretch_of_speech_covering_its_words(vad, speech):
    chunks, output = run(vad, speech)
    assert isinstance(output, Output)
    segments = output.json["segments"]
    assert segments, output.text
    # espeak's words lie between the second of silence before and after.
    clip = audio.decode(Audio(speech))
    words_end = clip.duration - 1.0
    assert segments[0]["start"] == pytest.approx(1.0, abs=0.15)
    assert segments[-1]["end"] == pytest.approx(words_end, abs=0.25)
    assert all(1.0 - 0.15 <= s["start"] < s["end"] <= words_end + 0.25 for s in segments)
    assert 0.4 < output.json["speech_ratio"] < 0.9
    assert output.json["latency_ms"] > 0
    # Each segment was streamed, in order, before the output.
    assert [c.json["segment"] for c in chunks if isinstance(c, Chunk)] == segments


def test_silence_and_a_steady_tone_hold_no_speech(vad):
    for samples in (np.zeros(16000, np.float32), sine(440, 16000, 2.0)):
        _, output = run(vad, wav(samples, 16000))
        assert output.json["segments"] == [] and output.json["speech_ratio"] == 0


def test_any_rate_and_channel_count_is_resampled_and_down_mixed(vad, speech):
    clip = audio.decode(Audio(speech))
    at_48k = audio.resample(clip.mono(), clip.sample_rate, 48000)
    stereo = wav(np.stack([at_48k, at_48k], axis=1), 48000, bits=32, float_format=True)
    _, reference = run(vad, speech)
    _, output = run(vad, stereo)
    assert output.json["sample_rate_hz"] == 48000 and output.json["channels"] == 2
    assert output.json["segments"][0]["start"] == pytest.approx(reference.json["segments"][0]["start"], abs=0.07)
    assert output.json["speech_seconds"] == pytest.approx(reference.json["speech_seconds"], abs=0.15)


def test_undecodable_audio_and_bad_parameters_are_invalid_input(vad, speech):
    with pytest.raises(InvalidInput, match="undecodable audio"):
        run(vad, b"\x00\x01garbage")
    with pytest.raises(InvalidInput, match=r"parameters\.threshold"):
        run(vad, speech, threshold=2)
