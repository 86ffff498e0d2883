"""Deep-feature extractors: fairseq wav2vec through the product vs fairseq itself, fbank, length unification,
and the errors a user sees for missing/wrong checkpoints and unavailable backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nni_emotionnas.errors import BackendError, ConfigError
from nni_emotionnas.features.fbank import FbankExtractor
from nni_emotionnas.features.registry import build_deep_extractor
from nni_emotionnas.features.sequence import DeepSequenceConfig, unify_length

SMALL_W2V = [
    "--conv-feature-layers", "[(32, 10, 5), (32, 8, 4), (32, 4, 2), (32, 4, 2), (32, 4, 2)]",
    "--conv-aggregator-layers", "[(32, 2, 1), (32, 3, 1), (32, 4, 1)]",
]


@pytest.fixture(scope="module")
def fairseq_wav2vec(tmp_path_factory):
    """A random-weight fairseq wav2vec (v1) saved as wav2vec_large.pt is: argparse `args` + state dict."""
    pytest.importorskip("fairseq")
    from fairseq import models, options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    torch.manual_seed(0)
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, ["/nonexistent-data", "--task", "audio_pretraining", "--arch", "wav2vec", "--criterion", "wav2vec",
                 *SMALL_W2V])
    model = models.build_model(convert_namespace_to_omegaconf(args).model, None).eval()
    path = tmp_path_factory.mktemp("w2v") / "wav2vec_small.pt"
    torch.save({"args": args, "model": model.state_dict()}, path)
    return path, model


def _speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def test_wav2vec_checkpoint_through_product_matches_fairseq(fairseq_wav2vec):
    path, reference = fairseq_wav2vec
    extractor = build_deep_extractor({"backend": "wav2vec", "checkpoint": str(path), "device": "cpu", "batch_size": 2})
    audios = [_speech(1.0, 0), _speech(0.5, 1), _speech(1.0, 2)]
    features = extractor.extract_batch(audios)
    with torch.no_grad():
        expected = [reference.feature_aggregator(reference.feature_extractor(torch.from_numpy(a)[None]))[0].T.numpy()
                    for a in audios]
    for got, want in zip(features, expected):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # 10 ms frames: 1 s of audio -> about 100 frames (the conv encoder's receptive field eats a few)
    assert 95 <= features[0].shape[0] <= 100 and features[0].shape[1] == 32
    assert extractor.extract(audios[1]).shape == expected[1].shape
    assert extractor.config()["output"] == "c" and str(path.resolve()) == extractor.config()["checkpoint"]


def test_wav2vec_accepts_cfg_style_checkpoints(fairseq_wav2vec, tmp_path):
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    path, reference = fairseq_wav2vec
    state = torch.load(path, weights_only=False)
    cfg = OmegaConf.to_container(convert_namespace_to_omegaconf(state["args"]), resolve=True, enum_to_str=True)
    new_style = tmp_path / "cfg_style.pt"
    torch.save({"cfg": cfg, "model": state["model"]}, new_style)
    audio = _speech(0.6, 3)
    got = build_deep_extractor({"backend": "wav2vec", "checkpoint": str(new_style), "device": "cpu"}).extract(audio)
    with torch.no_grad():
        want = reference.feature_aggregator(reference.feature_extractor(torch.from_numpy(audio)[None]))[0].T
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_wav2vec_errors_say_what_is_wrong_and_how_to_fix(tmp_path):
    pytest.importorskip("fairseq")
    with pytest.raises(BackendError, match="not found.*wav2vec_large.pt"):
        build_deep_extractor({"backend": "wav2vec", "checkpoint": str(tmp_path / "missing.pt")})
    not_fairseq = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, not_fairseq)
    with pytest.raises(BackendError, match="not a fairseq checkpoint.*'hf'"):
        build_deep_extractor({"backend": "wav2vec", "checkpoint": str(not_fairseq)}).extract(_speech(0.2, 0))
    wrong_kind = tmp_path / "w2v2.pt"
    torch.save({"cfg": {"model": {"_name": "wav2vec2"}}, "model": {}}, wrong_kind)
    with pytest.raises(BackendError, match="'wav2vec2' model, not wav2vec.*backend 'hf'"):
        build_deep_extractor({"backend": "wav2vec", "checkpoint": str(wrong_kind)}).extract(_speech(0.2, 0))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(BackendError, match="not a PyTorch checkpoint"):
        build_deep_extractor({"backend": "wav2vec", "checkpoint": str(garbage)}).extract(_speech(0.2, 0))
    with pytest.raises(ConfigError, match="features.deep.outputs: unknown key"):
        build_deep_extractor({"backend": "wav2vec", "outputs": "c"})


def test_torchaudio_backends_point_to_hf_when_torchaudio_cannot_load():
    try:
        import torchaudio  # noqa: F401
    except Exception:
        for backend in ("wav2vec2", "hubert", "wavlm"):
            with pytest.raises(BackendError, match=f"backend {backend}: torchaudio cannot be loaded.*backend 'hf'"):
                build_deep_extractor({"backend": backend, "checkpoint": "model.pt"})
    else:
        with pytest.raises(BackendError, match="not found"):
            build_deep_extractor({"backend": "hubert", "checkpoint": "/nonexistent/hubert.pt"})


def test_fbank_frames_are_10ms_log_mels_with_deltas():
    extractor = build_deep_extractor({"backend": "fbank", "n_mels": 40, "deltas": 2})
    assert isinstance(extractor, FbankExtractor) and extractor.parallel
    frames = extractor.extract(_speech(1.0, 0))
    assert frames.shape == (101, 120) and frames.dtype == np.float32 and np.isfinite(frames).all()
    # static part is the log mel energy; a sine at 180 Hz is loudest in a low band
    assert frames[:, :40].mean(axis=0).argmax() < 10
    assert extractor.extract(_speech(0.02, 0)).shape == (3, 120)  # shorter than a delta window: still works
    assert build_deep_extractor({"backend": "fbank", "deltas": 0}).extract(_speech(0.5, 0)).shape == (51, 40)
    with pytest.raises(ConfigError, match="features.deep.*deltas"):
        build_deep_extractor({"backend": "fbank", "deltas": 3})


def test_unify_length_pads_to_corpus_max_then_average_pools_with_mask():
    frames = np.arange(10 * 2, dtype=np.float32).reshape(10, 2) + 1
    out, mask = unify_length(frames, corpus_max_frames=20, config=DeepSequenceConfig(target_frames=5))
    assert out.shape == (5, 2) and mask.tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(out[0], frames[0:4].mean(axis=0))
    np.testing.assert_allclose(out[2], frames[8:10].sum(axis=0) / 4)  # half real, half zero padding
    assert (out[3:] == 0).all()
    # a corpus shorter than the target: no pooling, zero padding with mask
    out, mask = unify_length(frames[:3], corpus_max_frames=4, config=DeepSequenceConfig(target_frames=6))
    assert out.shape == (6, 2) and mask.sum() == 3 and (out[:3] == frames[:3]).all() and (out[3:] == 0).all()
    # uneven bins behave like adaptive average pooling
    long = np.random.default_rng(0).standard_normal((1000, 3)).astype(np.float32)
    out, mask = unify_length(long, 1000, DeepSequenceConfig(target_frames=727))
    want = torch.nn.functional.adaptive_avg_pool1d(torch.from_numpy(long).T[None], 727)[0].T.numpy()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    assert mask.all()
    strict = DeepSequenceConfig(target_frames=5, min_valid_fraction=0.5)
    assert unify_length(frames, 20, strict)[1].tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError, match="target_frames"):
        DeepSequenceConfig(target_frames=0)
