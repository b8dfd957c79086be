"""Inference precision: what ``precision="auto"`` picks for a device and CPU (a pure function of
the flags, simulated here), and what each precision runs. Timings are measured by
``bench/precision_bench.py``, never asserted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.ao.nn.quantized import dynamic as qdyn

from model import hardware
from model.classifier import (
    PRECISIONS,
    Classifier,
    choose_precision,
    native_bf16,
    resolve_precision,
)
from tests.model.test_inference_speedups import features, network

AVX2_EPYC = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma", "f16c"})
"""An AVX2-only EPYC (Zen 2/3): no bfloat16 in hardware; bf16 autocast ran 10x slower there."""
ZEN4 = AVX2_EPYC | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}
SAPPHIRE_RAPIDS = AVX2_EPYC | {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}
AVX512_NO_BF16 = AVX2_EPYC | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}


def fake_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: frozenset[str]) -> None:
    """Make ``model.hardware`` read a /proc/cpuinfo listing ``flags``."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        f"processor\t: 0\nmodel name\t: Simulated CPU\nflags\t\t: {' '.join(flags)}\n"
    )
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)


@pytest.mark.parametrize("flags", [AVX2_EPYC, AVX512_NO_BF16, frozenset()])
def test_auto_picks_fp32_on_a_cpu_without_native_bf16(flags: frozenset[str]) -> None:
    assert not native_bf16(flags)
    assert choose_precision("cpu", flags) == "fp32"


@pytest.mark.parametrize("flags", [ZEN4, SAPPHIRE_RAPIDS])
def test_auto_picks_bf16_on_a_cpu_with_native_bf16(flags: frozenset[str]) -> None:
    # bench/precision_bench.py on Zen 4 (avx512_bf16): flips and AUC change within the bar
    assert native_bf16(flags)
    assert choose_precision("cpu", flags) == "bf16"


@pytest.mark.parametrize("flags", [AVX2_EPYC, ZEN4, SAPPHIRE_RAPIDS])
def test_auto_picks_fp32_on_cuda_whatever_the_host_cpu(flags: frozenset[str]) -> None:
    assert choose_precision("cuda", flags) == "fp32"


def test_int8_is_never_chosen_automatically() -> None:
    for flags in (AVX2_EPYC, ZEN4, SAPPHIRE_RAPIDS, AVX512_NO_BF16, frozenset()):
        for device in ("cpu", "cuda"):
            assert choose_precision(device, flags) != "int8"


def test_resolve_checks_the_name_and_the_device() -> None:
    assert resolve_precision("auto", "cpu", AVX2_EPYC) == "fp32"
    assert resolve_precision("auto", "cpu", ZEN4) == "bf16"
    for explicit in ("fp32", "bf16", "int8"):  # an explicit choice is honoured on any CPU
        assert resolve_precision(explicit, "cpu", AVX2_EPYC) == explicit
    assert resolve_precision("bf16", "cuda") == "bf16"
    with pytest.raises(ValueError, match="int8"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", "cpu")
    assert set(PRECISIONS) == {"auto", "fp32", "bf16", "int8"}


def test_classifier_auto_runs_fp32_on_a_simulated_cpu_without_bf16(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cpu(tmp_path, monkeypatch, AVX2_EPYC)
    net = network()
    x = features(3)
    clf = Classifier(net, device="cpu", compile=False, precision="auto")
    assert clf.precision == "fp32" and clf.autocast is None
    with torch.inference_mode():
        ref = net(x).probs[:, 0].numpy()
    np.testing.assert_allclose(clf.predict_features(x).p_success, ref, atol=1e-5)


def test_classifier_auto_runs_bf16_on_a_simulated_cpu_with_native_bf16(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cpu(tmp_path, monkeypatch, ZEN4)
    clf = Classifier(network(), device="cpu", compile=False, precision="auto")
    assert clf.precision == "bf16" and clf.autocast == torch.bfloat16


def test_the_library_default_is_fp32_on_every_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cpu(tmp_path, monkeypatch, ZEN4)
    clf = Classifier(network(), device="cpu", compile=False)
    assert clf.precision == "fp32" and clf.autocast is None


def test_autocast_keyword_still_works_and_excludes_precision() -> None:
    clf = Classifier(network(), device="cpu", compile=False, autocast=torch.bfloat16)
    assert clf.precision == "bf16" and clf.autocast == torch.bfloat16
    with pytest.raises(ValueError, match="not both"):
        Classifier(
            network(), device="cpu", compile=False, precision="fp32", autocast=torch.bfloat16
        )
    with pytest.raises(ValueError, match="unknown precision"):
        Classifier(network(), device="cpu", compile=False, precision="half")


def test_int8_quantises_the_gru_and_linear_layers_only_and_stays_close() -> None:
    net = network()
    x = features(4)
    clf = Classifier(net, device="cpu", compile=False, precision="int8")
    assert clf.precision == "int8" and clf.autocast is None
    modules = list(clf.network.modules())
    assert sum(isinstance(m, qdyn.GRU) for m in modules) == 2
    assert sum(isinstance(m, qdyn.Linear) for m in modules) == 2
    assert not any(type(m) in (torch.nn.GRU, torch.nn.Linear) for m in modules)
    assert any(isinstance(m, torch.nn.Conv2d) for m in modules), "convolutions stay float"
    assert type(net.gru[0].gru) is torch.nn.GRU, "the caller's network is left alone"
    pred = clf.predict_features(x)
    with torch.inference_mode():
        ref = net(x).probs[:, 0].numpy()
    assert pred.p_success.dtype == np.float32
    np.testing.assert_allclose(pred.p_success, ref, atol=0.05)
    np.testing.assert_allclose(pred.p_success + pred.p_failure, 1.0, atol=1e-6)


def test_int8_refuses_compile() -> None:
    with pytest.raises(ValueError, match="int8"):
        Classifier(network(), device="cpu", compile=True, precision="int8")
