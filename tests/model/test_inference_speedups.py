"""The inference speed-ups change speed, never results: each is pinned against the plain path."""

from __future__ import annotations

import threading

import librosa
import numpy as np
import pytest
import torch
from torch import nn

from model import constants as C
from model.classifier import COMPILE_ENV, Classifier, compile_requested, inference_network
from model.errors import SettingError
from model.features import mfcc
from model.network import CGANet

FEATURES = (C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)


def network(seed: int = 3) -> CGANet:
    """A seeded CGANet in eval mode with non-trivial batch-norm statistics and affine terms."""
    torch.manual_seed(seed)
    net = CGANet()
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, nn.BatchNorm2d):
                assert layer.running_mean is not None and layer.running_var is not None
                layer.running_mean.normal_(0, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.normal_(0, 0.1)
    # standardisation and calibration buffers as a trained model has them: every fast path
    # must apply them exactly as the plain network does
    net.set_standardisation(20 * torch.randn(16, *FEATURES) + torch.linspace(-50, 50, C.N_MFCC))
    net.set_temperature(1.7)
    return net.eval()


def features(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 2, 86, 40) MFCC-scaled random features."""
    return 20 * torch.randn(n, *FEATURES, generator=torch.Generator().manual_seed(seed))


def max_diff(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    """Largest difference of any output, relative to that output's scale (at least 1)."""
    return max(
        ((x - y).abs().max() / y.abs().max().clamp_min(1.0)).item()
        for x, y in zip(a, b, strict=True)
    )


def test_folded_batch_norm_equals_unfused_in_eval_mode() -> None:
    net = network()
    x = features(3)
    with torch.inference_mode():
        assert max_diff(net.fused()(x), net(x)) <= 1e-5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.fused().modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules()), "original left intact"
    assert net.fused().training is False


def test_channels_last_equals_contiguous() -> None:
    net = network()
    fast = inference_network(net, torch.device("cpu"))
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = features(4)
    with torch.inference_mode():
        out = fast(x.contiguous(memory_format=torch.channels_last))
        assert max_diff(out, net(x)) <= 1e-5


def test_inference_network_leaves_training_semantics_alone() -> None:
    net = network().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    inference_network(net, torch.device("cpu"))
    assert net.training
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
        assert value.is_contiguous(), f"{key} left in its original memory format"


def test_classifier_default_path_equals_plain_network() -> None:
    net = network()
    x = features(5)
    clf = Classifier(net, device="cpu", compile=False, max_batch=2)
    assert not clf.compiled
    pred = clf.predict_features(x)
    with torch.inference_mode():
        ref = net(x)
    assert np.allclose(pred.frame_probs, ref.frame_probs.numpy(), atol=1e-5)
    assert np.allclose(pred.attention, ref.attention.numpy(), atol=1e-5)
    assert np.allclose(pred.embedding, ref.embedding.numpy(), atol=1e-4)
    assert np.allclose(pred.p_success, ref.probs[:, 0].numpy(), atol=1e-5)


def test_classifier_is_safe_to_share_between_threads() -> None:
    clf = Classifier(network(), device="cpu", compile=False)
    batches = [features(n, seed=n) for n in (1, 3, 2, 5)]
    expected = [clf.predict_features(b).p_success for b in batches]
    got: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        got[i] = clf.predict_features(batches[i]).p_success

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(expected):
        assert np.allclose(got[i], want, atol=1e-6)


def test_compile_switch_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(COMPILE_ENV, raising=False)
    assert compile_requested() is False
    for value, want in (("1", True), ("on", True), ("0", False), ("false", False)):
        monkeypatch.setenv(COMPILE_ENV, value)
        assert compile_requested() is want
        assert compile_requested(not want) is (not want), "an explicit choice wins"
    monkeypatch.setenv(COMPILE_ENV, "maybe")
    with pytest.raises(SettingError, match=COMPILE_ENV):
        compile_requested()
    monkeypatch.setenv(COMPILE_ENV, "0")
    assert Classifier(network(), device="cpu").compiled is False


def test_classifier_refuses_bad_speed_settings() -> None:
    with pytest.raises(ValueError, match="autocast"):
        Classifier(network(), device="cpu", compile=False, autocast=torch.float16)
    with pytest.raises(ValueError, match="max_batch"):
        Classifier(network(), device="cpu", compile=False, max_batch=0)
    with pytest.raises(ValueError, match="num_threads"):
        Classifier(network(), device="cpu", compile=False, num_threads=0)


def test_bfloat16_autocast_stays_close_to_float32() -> None:
    net = network()
    x = features(2)
    clf = Classifier(net, device="cpu", compile=False, autocast=torch.bfloat16)
    pred = clf.predict_features(x)
    with torch.inference_mode():
        ref = net(x).probs[:, 0]
    assert pred.p_success.dtype == np.float32
    assert np.allclose(pred.p_success, ref.numpy(), atol=0.05)


@pytest.mark.slow
def test_compiled_equals_eager_without_recompiling_per_batch_size() -> None:
    torch._dynamo.reset()
    net = network()
    clf = Classifier(net, device="cpu", compile=True)
    assert clf.compiled and clf.compile_seconds > 0
    eager = Classifier(net, device="cpu", compile=False)
    from torch._dynamo.utils import counters

    before = counters["stats"]["unique_graphs"]
    for n in (1, 3, 7):
        x = features(n, seed=n)
        got, want = clf.predict_features(x), eager.predict_features(x)
        assert np.allclose(got.frame_probs, want.frame_probs, atol=1e-5)
        assert np.allclose(got.attention, want.attention, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == before, "a batch size triggered a recompile"


def test_chunked_mfcc_equals_whole_batch_and_librosa() -> None:
    rng = np.random.default_rng(11)
    t = np.arange(C.SEGMENT_SAMPLES) / C.SAMPLE_RATE
    # 9 segments: more than one CPU chunk, and a partial last chunk; loudness differs per segment
    # so a chunk boundary that mixed segments would move the 80-dB floor.
    audio = np.stack(
        [
            np.stack([g * np.sin(2 * np.pi * (200 + 50 * i) * t), g * rng.standard_normal(t.size)])
            for i, g in enumerate(np.geomspace(1e-3, 1.0, 9))
        ]
    ).astype(np.float32)
    with torch.inference_mode():
        batch = mfcc(torch.from_numpy(audio))
        one_by_one = torch.cat([mfcc(torch.from_numpy(a[None])) for a in audio])
        nested = mfcc(torch.from_numpy(audio[:8].reshape(2, 4, 2, -1)))
    assert batch.shape == (9, *FEATURES)
    assert torch.allclose(batch, one_by_one, atol=1e-4)
    assert torch.allclose(nested.reshape(8, *FEATURES), batch[:8], atol=1e-4)
    for i in (0, 8):
        ref = librosa.feature.mfcc(
            y=audio[i], sr=C.SAMPLE_RATE, n_mfcc=C.N_MFCC, n_fft=C.N_FFT, hop_length=C.HOP_LENGTH
        ).transpose(0, 2, 1)[:, : C.N_FRAMES]
        error = np.abs(batch[i].numpy() - ref).max() / np.abs(ref).max()
        assert error <= 1e-3, f"segment {i}: relative max error {error:.2e}"
