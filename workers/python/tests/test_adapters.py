"""GAMA, wav2vec2 and the merge, up to the forward pass (their weights
cannot be had here)."""

import json

import grpc
import numpy as np
import pytest
from conftest import infer_request, sine, wav
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_server import wait_for

from grym_worker.model import Audio, FailedPrecondition, InvalidInput, Request
from grym_worker.models.gama import (
    MEL_BINS,
    TARGET_FRAMES,
    Gama,
    answer_from,
    gama_features,
    kaldi_fbank,
    mel_banks,
)
from grym_worker.models.merge import AnalysisMerge
from grym_worker.models.wav2vec2 import Wav2Vec2, ctc_decode, normalise, read_vocab


def request(task_type, data, **parameters):
    return Request(task_id="t", task_type=task_type, input=Audio(data), parameters=parameters)


def test_gama_input_is_its_normalised_filterbank_and_prompt_from_any_rate(speech):
    prepared = Gama().prepare(request("audio_question_answering", speech, question="Who is speaking?"))
    assert prepared.fbank.shape == (TARGET_FRAMES, MEL_BINS) and prepared.fbank.dtype == np.float32
    assert np.all(np.isfinite(prepared.fbank))
    assert "### Instruction:\nWho is speaking?\n" in prepared.prompt
    assert prepared.prompt.endswith("### Response:\n")
    default = Gama().prepare(request("audio_analysis", speech))
    assert "Describe the audio in detail." in default.prompt


def test_the_filterbank_puts_a_tone_in_its_mel_band():
    fbank = kaldi_fbank(sine(1000, 16000, 1.0))
    assert fbank.shape == (98, MEL_BINS)  # 1 + (16000 - 400) // 160
    banks = mel_banks(MEL_BINS, 512, 16000)
    expected = int(np.argmax(banks[:, int(round(1000 / (16000 / 512)))]))
    assert abs(int(np.argmax(fbank.mean(axis=0))) - expected) <= 1
    long = gama_features(sine(500, 16000, 12.0))
    assert long.shape == (TARGET_FRAMES, MEL_BINS)


def test_gama_answer_is_cut_out_of_the_generated_text():
    generated = "Below is ... ### Response:\n A dog barks twice.</s><unk>"
    assert answer_from(generated) == "A dog barks twice."


def test_a_missing_checkpoint_or_extra_is_a_clear_error(tmp_path):
    with pytest.raises(FailedPrecondition, match="does not exist"):
        Gama(checkpoint=str(tmp_path / "nowhere")).load()
    with pytest.raises(FailedPrecondition, match="no config.json"):
        Wav2Vec2(checkpoint=str(tmp_path)).load()
    (tmp_path / "config.json").write_text("{}")
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(FailedPrecondition, match=r"workers/python\[gama\]"):
            Gama(checkpoint=str(tmp_path)).load()


def test_gama_without_its_checkpoint_is_not_serving_and_says_why(serve, tmp_path):
    served = serve(Gama(checkpoint=str(tmp_path / "missing")))
    wait_for(lambda: served.worker.load_error is not None)
    status = health_pb2_grpc.HealthStub(served.channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as error:
        served.stub.Infer(infer_request("audio_analysis", data=wav(sine(440, 16000, 0.5), 16000)), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "checkpoint" in error.value.details() and "missing" in error.value.details()


def test_wav2vec2_input_is_16_khz_normalised(speech):
    values = Wav2Vec2().prepare(request("transcription", speech))
    assert abs(float(values.mean())) < 1e-4 and abs(float(values.std()) - 1) < 1e-3
    assert abs(len(values) / 16000 - (len(speech) - 44) / 2 / 22050) < 0.01
    assert np.allclose(normalise(np.array([1.0, 3.0])), [-1.0, 1.0], atol=1e-3)


def test_ctc_decoding_collapses_repeats_and_drops_blanks(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"<pad>": 0, "<s>": 1, "|": 2, "H": 3, "I": 4, "O": 5}))
    vocab = read_vocab(tmp_path)
    ids = np.array([0, 3, 3, 0, 4, 2, 2, 0, 3, 0, 0, 5, 5, 2, 1])
    assert ctc_decode(ids, vocab) == "HI HO"
    logits = np.eye(6)[ids]
    model = Wav2Vec2()
    model.vocab = vocab
    assert model.shape(logits, 1.0, 0.0).text == "HI HO"


def test_the_merge_joins_the_steps_it_waits_for():
    context = {
        "steps": {
            "voice_activity": {"model_id": "vad", "text": "1 speech segment(s)", "json": {"segments": []}},
            "music_transcription": {"model_id": "pitch", "text": "1 note(s): A4", "json": {"notes": [1]}},
        }
    }
    output = AnalysisMerge().infer(Request(task_id="t", task_type="analysis_merge", input="", context=context))
    assert output.json["voice_activity"] == {"model_id": "vad", "output": {"segments": []}}
    assert output.text.splitlines() == ["music_transcription (pitch): 1 note(s): A4", "voice_activity (vad): 1 speech segment(s)"]
    with pytest.raises(InvalidInput, match=r"context\.steps"):
        AnalysisMerge().infer(Request(task_id="t", task_type="analysis_merge", input=""))
