"""The default training recipe's parts: standardisation, calibration, class names, uncertainty,
and that it learns (issue 9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from model import aggregate, calibration, checkpoint
from model import constants as C
from model.classes import class_map
from model.classifier import Classifier
from model.errors import DataError
from model.network import ATTENTION_SCALE, CGANet, segment_logit
from model.train import TrainConfig, augment, calibrate, class_weights, evaluate_scores, fit

FEATURES = (C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)


def separable(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2, 86, 40) MFCC-scaled features whose class shows in a few coefficients, (n,) labels.

    Coefficient 0 sits in the hundreds as a real MFCC c0 does, so the set only separates
    cleanly after standardisation."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 5, size=(n, *FEATURES)).astype(np.float32)
    x[:, :, :, 0] += 300
    y = (np.arange(n) % 2).astype(np.int64)
    x[y == 0, :, :, 5:8] += 4.0
    return x, y


def test_standardisation_is_learned_from_training_data_and_travels_in_the_checkpoint(
    tmp_path: Path,
) -> None:
    x, y = separable(24)
    config = TrainConfig(epochs=1, batch_size=8, device="cpu", progress=False, patience=None)
    result = fit(x[:16], y[:16], x[16:], y[16:], config)
    model = result.model
    expected_mean = x[:16].mean(axis=(0, 2), keepdims=True)
    assert np.allclose(model.input_mean.numpy(), expected_mean, rtol=1e-4)
    assert np.allclose(
        model.input_std.numpy(), x[:16].std(axis=(0, 2), ddof=1, keepdims=True), rtol=1e-3
    )
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, model)
    loaded, _ = checkpoint.load(path)
    assert torch.equal(loaded.input_mean, model.input_mean)
    assert torch.equal(loaded.input_std, model.input_std)
    assert torch.equal(loaded.temperature, model.temperature)
    assert torch.equal(loaded.calibration_bias, model.calibration_bias)
    # the service's fast path (folded batch norm, channels_last) applies them identically
    features = torch.from_numpy(x[16:])
    with torch.inference_mode():
        reference = loaded(features).probs[:, 0].numpy()
    fast = Classifier.from_checkpoint(path, device="cpu").predict_features(x[16:])
    assert np.allclose(fast.p_success, reference, atol=1e-5)


def test_standardisation_changes_what_the_network_sees() -> None:
    torch.manual_seed(0)
    net = CGANet().eval()
    x = 300 + torch.randn(4, *FEATURES)
    before = net(x).totals
    net.set_standardisation(x)
    after = net(x).totals
    assert not torch.allclose(before, after)
    with pytest.raises(ValueError, match="standardisation needs"):
        net.set_standardisation(torch.zeros(4, 2, 86, 39))


def test_temperature_fit_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, size=4000)
    positive = rng.random(4000) < 1 / (1 + np.exp(-true_logit))
    # a model three times too sure: its logits are 3x the true ones
    fitted = calibration.fit_temperature(3 * true_logit, positive)
    assert fitted == pytest.approx(3.0, rel=0.1)
    before = calibration.reliability(1 / (1 + np.exp(-3 * true_logit)), positive).ece
    after = calibration.reliability(1 / (1 + np.exp(-3 * true_logit / fitted)), positive).ece
    assert after < before / 2 and after < 0.03
    with pytest.raises(ValueError, match="N > 0"):
        calibration.fit_temperature(np.zeros(0), np.zeros(0, bool))


def test_platt_recovers_temperature_and_a_prior_shift() -> None:
    """A class-weighted loss trains as if the classes were balanced: the bias puts the prior
    back, which a temperature alone cannot."""
    rng = np.random.default_rng(6)
    true_logit = rng.normal(0, 2, size=6000) - 1.0  # class 0 is the minority here
    positive = rng.random(6000) < 1 / (1 + np.exp(-true_logit))
    seen = 2.0 * (true_logit + 1.0)  # over-confident and centred on a balanced prior
    temperature, bias = calibration.fit_platt(seen, positive)
    assert temperature == pytest.approx(2.0, rel=0.1) and bias == pytest.approx(-1.0, abs=0.15)
    only_t = calibration.fit_temperature(seen, positive)
    ece_t = calibration.reliability(1 / (1 + np.exp(-seen / only_t)), positive).ece
    ece_platt = calibration.reliability(
        1 / (1 + np.exp(-(seen / temperature + bias))), positive
    ).ece
    assert ece_platt < 0.03 < ece_t


def test_reliability_of_a_calibrated_and_an_overconfident_predictor() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(20_000)
    outcome = rng.random(20_000) < p
    good = calibration.reliability(p, outcome)
    assert good.ece < 0.02 and good.count.sum() == 20_000
    assert np.allclose(good.observed, good.mean_p, atol=0.03)
    sure = calibration.reliability(np.where(p > 0.5, 0.99, 0.01), outcome)
    assert sure.ece > 0.2


def test_calibration_round_trip_keeps_the_decision(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = CGANet().eval()
    x = torch.randn(12, *FEATURES)
    with torch.inference_mode():
        plain = net(x)
    net.set_temperature(2.5)
    path = tmp_path / "calibrated.safetensors"
    checkpoint.save(path, net)
    classifier = Classifier.from_checkpoint(path, device="cpu")
    got = classifier.predict_features(x.numpy())
    expected = torch.sigmoid(segment_logit(plain.totals) / 2.5).numpy()
    assert np.allclose(got.p_success, expected, atol=1e-5)
    assert np.allclose(got.p_success + got.p_failure, 1.0, atol=1e-6)
    # a temperature alone never changes the paper's decision P_s > P_f
    paper = (plain.totals[:, 0] > plain.totals[:, 1]).numpy()
    assert np.array_equal(got.p_success > 0.5, paper)
    # the bias travels too, and is applied by the service's path
    net.set_temperature(2.5, bias=-0.7)
    checkpoint.save(path, net)
    got = Classifier.from_checkpoint(path, device="cpu").predict_features(x.numpy())
    expected = torch.sigmoid(segment_logit(plain.totals) / 2.5 - 0.7).numpy()
    assert np.allclose(got.p_success, expected, atol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        net.set_temperature(0.0)
    with pytest.raises(ValueError, match="finite"):
        net.set_temperature(1.0, bias=float("nan"))


def test_fit_calibrates_on_validation() -> None:
    x, y = separable(48, seed=3)
    config = TrainConfig(epochs=3, batch_size=8, device="cpu", progress=False, patience=None)
    result = fit(x[:32], y[:32], x[32:], y[32:], config)
    assert result.calibration["temperature"] == pytest.approx(result.model.temperature.item())
    assert result.calibration["val_ece_after"] <= result.calibration["val_ece_before"] + 1e-9
    assert result.calibration["cut"] == "validation" and result.calibration["segments"] == 16
    assert result.calibration["class0_share"] == pytest.approx(np.mean(y[32:] == 0))
    # given another calibration set (the detector's cuts), the fit is on that set alone
    other_x, other_y = separable(30, seed=9)
    other_y[:20] = 0  # a different class share from the validation segments'
    elsewhere = fit(
        x[:32], y[:32], x[32:], y[32:], config, calibration_set=(other_x, other_y, "detector")
    )
    assert elsewhere.calibration["cut"] == "detector" and elsewhere.calibration["segments"] == 30
    assert elsewhere.calibration["class0_share"] == pytest.approx(np.mean(other_y == 0))
    assert elsewhere.calibration["temperature"] == pytest.approx(
        calibrate(result.model, other_x, other_y)["temperature"], rel=1e-6
    )
    off = fit(
        x[:32], y[:32], x[32:], y[32:], TrainConfig(**{**config.__dict__, "calibrate": False})
    )
    assert off.model.temperature.item() == 1.0 and off.calibration == {}


def test_format_1_checkpoints_load_with_identical_outputs(tmp_path: Path) -> None:
    """Format 1 had no buffers and no attention scale; loading converts it exactly."""
    torch.manual_seed(4)
    net = CGANet().eval()
    old_state = {
        k: v.clone()
        for k, v in net.state_dict().items()
        if k not in ("input_mean", "input_std", "temperature", "calibration_bias")
    }
    old_state["classifier.weight"] = old_state["classifier.weight"] * ATTENTION_SCALE
    meta = {
        "format": checkpoint.FORMAT_1,
        "class_names": ["success", "failure"],
        "feature_config": C.feature_config(),
        "model_version": checkpoint.weights_version(old_state),
    }
    path = tmp_path / "old.safetensors"
    save_file(old_state, str(path), metadata={checkpoint.METADATA_KEY: json.dumps(meta)})
    loaded, loaded_meta = checkpoint.load(path)
    x = torch.randn(3, *FEATURES)
    with torch.inference_mode():
        assert torch.allclose(loaded(x).totals, net(x).totals, atol=1e-5)
    assert loaded_meta["model_version"] == meta["model_version"]


@pytest.mark.parametrize(
    ("labels", "classes", "names", "success_labels"),
    [
        (["Success", "Failure"], None, ("success", "failure"), ["Success"]),
        (["FAILURE", "SUCCESS", "success"], None, ("success", "failure"), ["SUCCESS", "success"]),
        (["failed", "successful"], None, ("success", "failure"), ["successful"]),
        (["1", "0"], "success=1,failure=0", ("success", "failure"), ["1"]),
        (["0", "1"], "failure=0,success=1", ("success", "failure"), ["1"]),
        (["Failure", "Success"], "Failure,Success", ("success", "failure"), ["Success"]),
        (["pain", "discomfort"], None, ("discomfort", "pain"), ["discomfort"]),
        (["1", "0"], "1,0", ("1", "0"), ["1"]),
    ],
)
def test_panda_outcomes_are_class_0_success_whatever_their_spelling(
    labels: list[str], classes: str | None, names: tuple[str, str], success_labels: list[str]
) -> None:
    mapping = class_map(labels, classes)
    assert mapping.names == names
    assert [label for label in labels if mapping.index(label) == 0] == success_labels


@pytest.mark.parametrize("labels", [["1", "0"], ["yes", "no"], ["True", "False"]])
def test_ambiguous_labels_are_refused_naming_classes(labels: list[str]) -> None:
    with pytest.raises(DataError, match="--classes"):
        class_map(labels)


def test_bad_classes_options_are_refused() -> None:
    for text in ("a", "a,b,c", "a,a", "success=1,0", "success=1,failure=1"):
        with pytest.raises(DataError, match="--classes"):
            class_map(["a", "b"], text)


def test_uncertain_band() -> None:
    assert aggregate.verdict(0.65) == "success"
    assert aggregate.verdict(0.35) == "failure"
    assert aggregate.verdict(0.5) == aggregate.verdict(0.4) == aggregate.verdict(0.6) == "uncertain"
    assert (
        aggregate.verdict(0.55, band=(0.5, 0.5)) == "success"
    )  # a zero-width band: the paper's rule
    assert aggregate.verdict(0.55, ("pain", "discomfort"), (0.45, 0.7)) == "uncertain"
    assert aggregate.verdict(None) is None
    for bad in ((0.6, 0.4), (0.55, 0.7), (-0.1, 0.6), (0.4, 1.2)):
        with pytest.raises(ValueError, match="uncertain band"):
            aggregate.check_band(bad)


def test_one_decision_rule_for_scalars_and_arrays() -> None:
    """P_s > P_f: class 0 strictly above 0.5, class 1 at 0.5 exactly and below."""
    assert [aggregate.decide(p) for p in (0.0, 0.49, 0.5, 0.5000001, 1.0)] == [1, 1, 1, 0, 0]
    assert aggregate.decide(np.float32(0.75)) == 0
    p = np.array([0.1, 0.5, np.nextafter(0.5, 1.0), 0.9])
    assert aggregate.decide(p).tolist() == [1, 1, 0, 0]
    assert aggregate.decide(p).tolist() == np.where(p > 0.5, 0, 1).tolist()
    assert aggregate.verdict(0.5, band=(0.5, 0.5)) == "failure"


def test_class_weights_balance_the_classes() -> None:
    weights = class_weights(np.array([0, 0, 0, 1]))
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])
    with pytest.raises(DataError, match="both classes"):
        class_weights(np.array([0, 0]))


def test_augmentation_keeps_shapes_and_moves_frames() -> None:
    x = torch.arange(2 * 86 * 40, dtype=torch.float32).reshape(1, *FEATURES).repeat(8, 1, 1, 1)
    fill = torch.full((1, 2, 1, 40), -1.0)
    out = augment(x, fill, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert not torch.equal(out, x)
    # every output value is an input value of the same segment (shifted, swapped) or the fill
    for i in range(len(out)):
        values = set(out[i].unique().tolist())
        assert values <= set(x[i].unique().tolist()) | {-1.0}


def test_default_recipe_learns_a_separable_set_in_a_few_epochs() -> None:
    """The property the old recipe lacked: it leaves the class prior within a few epochs."""
    x, y = separable(96, seed=5)
    config = TrainConfig(epochs=4, batch_size=16, device="cpu", progress=False, patience=None)
    result = fit(x[:64], y[:64], x[64:], y[64:], config)
    train = evaluate_scores(result.model, x[:64], y[:64], torch.device("cpu"))
    assert train["auc"] >= 0.95
    assert result.best["auc"] >= 0.9


def test_bf16_autocast_leaves_the_gru_softmaxes_and_sums_in_float32() -> None:
    """Under CPU autocast only the convolutions run in bfloat16: scores are float32, not bf16
    steps of about 0.003 with ties (issue 9)."""
    torch.manual_seed(7)
    net = CGANet().eval()
    x = torch.randn(16, *FEATURES)
    with torch.inference_mode():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x)
    for name in ("frame_probs", "totals", "attention", "embedding", "probs"):
        assert getattr(low, name).dtype == torch.float32, name
    # no bf16 quantisation of the scores: 16 different segments give 16 different scores
    assert len(torch.unique(low.probs[:, 0])) == 16
    assert torch.allclose(low.probs, reference.probs, atol=0.02)


def test_encounter_rule_scores_an_encounter_by_its_evidence_without_the_training_share() -> None:
    p = np.array([0.62, 0.62, 0.62])
    assert aggregate.running_p_success(p, 0.5) == pytest.approx(0.62)
    assert aggregate.running_p_success(p, 0.62) == pytest.approx(0.5)
    # a failure whose calls average 0.55 reads as success by the mean (a checkpoint without its
    # share), as failure once the training segments' success share (0.62) is taken out
    failure = np.array([0.8, 0.3, 0.55])
    assert aggregate.running_p_success(failure) == pytest.approx(0.55)
    assert aggregate.running_p_success(failure, 0.62) < 0.5
    assert aggregate.running_p_success([], 0.62) is None
    assert aggregate.running_p_success([]) is None
    # certain segments are clipped, so one of them cannot decide an encounter alone
    assert 0.0 < aggregate.running_p_success([0.0, 1.0, 1.0], 0.5) < 1.0
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="class-0 share"):
            aggregate.running_p_success(p, bad)


@pytest.mark.parametrize("prior", [None, 0.3, 0.62])
def test_running_series_and_sums_agree_with_the_encounter_rule(prior: float | None) -> None:
    p = np.random.default_rng(0).uniform(0, 1, 17)
    p[3] = 1.0  # clipped like the rest
    series = aggregate.running_series(p, prior)
    assert series.shape == (17,)
    for n in range(1, 18):
        expected = aggregate.running_p_success(p[:n], prior)
        assert series[n - 1] == pytest.approx(expected, abs=1e-12)
        sums = aggregate.from_sums(
            float(p[:n].sum()), sum(aggregate.log_odds(x) for x in p[:n]), n, prior
        )
        assert sums == pytest.approx(expected, abs=1e-12)
    assert aggregate.from_sums(0.0, 0.0, 0, prior) is None
    assert aggregate.running_series([], prior).shape == (0,)


def test_class_share_is_read_from_a_dataset_summary() -> None:
    summary = {
        "class_names": ["success", "failure"],
        "segments_per_class": {"success": 62, "failure": 38},
    }
    assert aggregate.class0_share(summary) == pytest.approx(0.62)
    assert aggregate.class0_share({}) is None
    one_class = {**summary, "segments_per_class": {"success": 5, "failure": 0}}
    assert aggregate.class0_share(one_class) is None
    # class 0 is the first class name, whatever the counts' order
    flipped = {
        "class_names": ["failure", "success"],
        "segments_per_class": summary["segments_per_class"],
    }
    assert aggregate.class0_share(flipped) == pytest.approx(0.38)


def test_classifier_reads_its_training_share_from_the_checkpoint(tmp_path: Path) -> None:
    data = {
        "class_names": ["success", "failure"],
        "segments_per_class": {"success": 3, "failure": 1},
    }
    net = CGANet()
    assert Classifier(net, {"data": data}).class0_share == pytest.approx(0.75)
    assert Classifier(net, {}).class0_share is None  # an older checkpoint: the mean rule
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, net, {"data": data})
    assert Classifier.from_checkpoint(path, device="cpu").class0_share == pytest.approx(0.75)
    # the prior the calibrated probabilities carry is the calibration set's share, when recorded
    metrics = {"calibration": {"temperature": 1.3, "class0_share": 0.52, "cut": "detector"}}
    assert Classifier(net, {"data": data, "metrics": metrics}).class0_share == pytest.approx(0.52)
    assert aggregate.checkpoint_share({"data": data, "metrics": metrics}) == pytest.approx(0.52)
    assert aggregate.checkpoint_share({"data": data, "metrics": {}}) == pytest.approx(0.75)
    unrecorded = {"calibration": {"temperature": 1.3, "class0_share": 1.0}}
    assert aggregate.checkpoint_share({"data": data, "metrics": unrecorded}) == pytest.approx(0.75)
    assert aggregate.checkpoint_share({}) is None
