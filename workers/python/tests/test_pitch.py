import numpy as np
import pytest
from conftest import sine, wav

from grym_worker.model import Audio, InvalidInput, Request
from grym_worker.models.midi import notes_to_midi
from grym_worker.models.pitch import BasicPitch, local_maxima, note_name


@pytest.fixture(scope="module")
def pitch() -> BasicPitch:
    model = BasicPitch()
    model.load()
    return model


def run(model, data: bytes, **parameters):
    return model.infer(Request(task_id="t", task_type="music_transcription", input=Audio(data), parameters=parameters))


def test_a_440_hz_tone_is_midi_note_69(pitch):
    output = run(pitch, wav(sine(440, 16000, 1.0), 16000))
    notes = output.json["notes"]
    assert [n["pitch"] for n in notes] == [69], output.text
    assert notes[0]["name"] == "A4" and notes[0]["start"] < 0.1 and notes[0]["end"] > 0.8
    assert 0 < notes[0]["confidence"] <= 1
    assert output.data == b""


def test_a_melody_at_44_1_khz_in_stereo_comes_out_in_order(pitch):
    rate = 44100
    melody = np.concatenate([sine(f, rate, 0.5) for f in (261.63, 329.63, 392.0)])
    output = run(pitch, wav(np.stack([melody, melody], axis=1), rate))
    pitches = [n["pitch"] for n in output.json["notes"]]
    assert pitches == [60, 64, 67], output.text


def test_midi_is_returned_when_asked(pitch):
    output = run(pitch, wav(sine(440, 22050, 1.0), 22050), midi=True)
    assert output.data_mime_type == "audio/midi"
    assert output.data.startswith(b"MThd") and b"MTrk" in output.data
    assert bytes([0x90, 69]) in output.data


def test_undecodable_audio_and_bad_parameters_are_invalid_input(pitch):
    with pytest.raises(InvalidInput, match="undecodable audio"):
        run(pitch, b"ID3 not a wav")
    with pytest.raises(InvalidInput, match=r"parameters\.midi"):
        run(pitch, wav(sine(440, 16000, 0.5), 16000), midi="yes")


def test_helpers():
    assert note_name(60) == "C4" and note_name(69) == "A4"
    mask = local_maxima(np.array([[0.0], [1.0], [0.5], [0.5], [2.0], [1.0]]))
    assert mask[:, 0].tolist() == [False, True, False, False, True, False]
    midi = notes_to_midi([(0.0, 0.5, 60, 1.0)])
    assert midi[:4] == b"MThd" and midi.endswith(b"\x00\xff\x2f\x00")
