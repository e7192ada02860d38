"""Training and evaluation on tiny synthetic feature sets."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwscompress.config import TrainConfig
from kwscompress.errors import ConfigError, KwsError
from kwscompress.models import DsCnn, TinyConv
from kwscompress.train import (
    LabeledFeatures,
    _blended_loss,
    evaluate,
    predict,
    set_seed,
    train_model,
    warp_frequency,
)

SHAPE = (49, 40)
CLASSES = 3


def _toy(clips: int, seed: int) -> LabeledFeatures:
    """Noise plus a bright band whose frequency position depends on the class."""
    rng = np.random.default_rng(seed)
    labels = np.arange(clips) % CLASSES
    features = rng.normal(0.0, 1.0, (clips, *SHAPE)).astype(np.float32)
    for i, label in enumerate(labels):
        features[i, :, 12 * label : 12 * label + 8] += 2.0
    return LabeledFeatures(features, labels)


def _config(**changes: object) -> TrainConfig:
    values = {"epochs": 3, "batch_size": 10, "learning_rate": 0.003, "seed": 7}
    values["label_smoothing"] = 0.0  # plain cross-entropy unless a test asks for smoothing
    values.update(changes)
    return TrainConfig(**values)  # type: ignore[arg-type]


def _train(tmp_path: Path, config: TrainConfig, train: LabeledFeatures | None = None):
    set_seed(config.seed)
    model = TinyConv(SHAPE, CLASSES)
    train = _toy(60, seed=1) if train is None else train
    checkpoint = tmp_path / "best.pt"
    result = train_model(model, train, _toy(30, seed=2), config, checkpoint)
    return model, result, checkpoint


def test_learns_a_separable_problem_and_keeps_the_best_epoch(tmp_path: Path) -> None:
    calls = []
    set_seed(7)
    model = TinyConv(SHAPE, CLASSES)
    validation = _toy(30, seed=2)
    before = evaluate(model, validation, ["a", "b", "c"])["accuracy"]
    checkpoint = tmp_path / "ckpt" / "best.pt"
    result = train_model(model, _toy(60, seed=1), validation, _config(), checkpoint, calls.append)

    assert calls == [1, 1, 1]
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    accuracies = [h["validation_accuracy"] for h in result.history]
    assert result.best_validation_accuracy == max(accuracies) > 0.8 > before
    assert result.history[result.best_epoch - 1]["validation_accuracy"] == max(accuracies)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.seconds >= result.seconds_per_epoch * 3 > 0

    # The checkpoint is the best epoch, and those weights are what the model holds now.
    saved = torch.load(checkpoint, weights_only=True)
    assert set(saved) == set(model.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    after = evaluate(model, validation, ["a", "b", "c"])
    assert after["accuracy"] == result.best_validation_accuracy
    assert after["loss"] == pytest.approx(
        result.history[result.best_epoch - 1]["validation_loss"], rel=1e-5
    )
    assert list(checkpoint.parent.iterdir()) == [checkpoint]  # no temporary file left


def test_the_best_epoch_not_the_last_is_loaded_back(tmp_path: Path) -> None:
    # Validation labels are the training mapping shifted by one class, so the better the model
    # learns, the worse it validates: the first epoch must win.
    validation = _toy(30, seed=2)
    validation = LabeledFeatures(validation.features, (validation.labels + 1) % CLASSES)
    set_seed(7)
    model = TinyConv(SHAPE, CLASSES)
    result = train_model(model, _toy(60, 1), validation, _config(epochs=2), tmp_path / "b.pt")
    assert result.best_epoch == 1
    first, last = result.history
    assert first["validation_loss"] < last["validation_loss"]
    report = evaluate(model, validation, ["a", "b", "c"])
    assert report["loss"] == pytest.approx(first["validation_loss"], rel=1e-5)
    saved = torch.load(tmp_path / "b.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_same_seed_same_history_other_seed_other_history(tmp_path: Path) -> None:
    def history(seed: int) -> list[dict[str, float]]:
        _, result, _ = _train(tmp_path, _config(epochs=2, seed=seed))
        return [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]

    first = history(3)
    assert history(3) == first
    assert history(4) != first


def test_fine_tuning_keeps_the_start_unless_an_epoch_beats_it(tmp_path: Path) -> None:
    model, _, _ = _train(tmp_path, _config(epochs=4))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    validation = _toy(30, seed=2)
    before = evaluate(model, validation, [str(i) for i in range(CLASSES)])
    # Fine-tuning on wrong labels (each clip labelled as the next class): no epoch beats the
    # start on validation.
    toy = _toy(60, seed=1)
    wrong = LabeledFeatures(toy.features, (toy.labels + 1) % CLASSES)
    wrecked = train_model(
        model, wrong, validation, _config(epochs=2), tmp_path / "ft.pt", keep_start=True
    )
    assert wrecked.best_epoch == 0 and len(wrecked.history) == 2
    assert wrecked.best_validation_accuracy == before["accuracy"]
    assert all(h["validation_accuracy"] < before["accuracy"] for h in wrecked.history)
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    # From fresh weights the first epoch beats the start, as without keep_start.
    set_seed(7)
    fresh = TinyConv(SHAPE, CLASSES)
    learnt = train_model(
        fresh, _toy(60, seed=1), validation, _config(epochs=2), tmp_path / "ft2.pt",
        keep_start=True,
    )  # fmt: skip
    assert learnt.best_epoch >= 1


def _strides(layout: torch.memory_format) -> tuple[int, ...]:
    # DsCnn's 4-D weights have one input channel or a 1x1 kernel, so both layouts count as
    # contiguous; their strides tell them apart.
    return torch.empty(4, 4, 1, 1).to(memory_format=layout).stride()


class _StrideRecordingDsCnn(DsCnn):
    """A DsCnn that records its first pointwise weight's strides at every forward pass."""

    def __init__(self) -> None:
        super().__init__(SHAPE, CLASSES, filters=4, blocks=1)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.blocks[0][1][0].weight.stride())
        return super().forward(features)


def test_a_model_trains_in_the_layout_it_names_and_comes_back_in_the_default_one(
    tmp_path: Path,
) -> None:
    set_seed(7)
    model = _StrideRecordingDsCnn()
    assert model.memory_format == torch.channels_last
    assert _strides(torch.channels_last) != _strides(torch.contiguous_format)
    train_model(model, _toy(60, 1), _toy(30, 2), _config(epochs=1), tmp_path / "b.pt")
    # The first call is the output-count probe before training starts.
    assert len(model.seen) > 1 and set(model.seen[1:]) == {_strides(torch.channels_last)}
    pointwise = model.blocks[0][1][0].weight
    assert pointwise.stride() == _strides(torch.contiguous_format)
    saved = torch.load(tmp_path / "b.pt", weights_only=True)
    assert torch.equal(saved["blocks.0.1.0.weight"], pointwise)


def test_predict_and_evaluate_run_in_the_models_layout_and_leave_the_default_one() -> None:
    set_seed(7)
    model = _StrideRecordingDsCnn().eval()
    data = _toy(40, 3)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(data.features)), dim=1).numpy()
    model.seen.clear()
    probabilities = predict(model, data.features)
    report = evaluate(model, data, [str(i) for i in range(CLASSES)])
    # predict's pass and evaluate's (after its output-count probe) run channels-last.
    assert len(model.seen) == 3
    assert model.seen[0] == model.seen[2] == _strides(torch.channels_last)
    assert model.blocks[0][1][0].weight.stride() == _strides(torch.contiguous_format)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert report["accuracy"] == float((expected.argmax(axis=1) == data.labels).mean())


def test_frequency_warp_moves_formants_and_repeats_the_top_bin() -> None:
    bins = np.arange(40, dtype=np.float32)
    # A smooth bump at bin 20 in every frame, and a distinct bottom and top bin.
    bump = np.exp(-0.5 * ((bins - 20) / 2.0) ** 2)
    bump[0], bump[-1] = 5.0, 7.0
    features = torch.from_numpy(np.tile(bump, (3, 4, 1)).astype(np.float32))
    warped = warp_frequency(features, torch.tensor([1.0, 0.9, 1.1])).numpy()

    np.testing.assert_allclose(warped[0], features[0].numpy(), atol=1e-6)
    assert np.all(warped[:, :, 0] == 5.0)

    def centre(row: np.ndarray) -> float:
        middle = row[5:30]  # away from the edge bins
        return float((middle * bins[5:30]).sum() / middle.sum())

    # Output bin i reads the input at factor * i: the bump lands at 20 / factor.
    assert centre(warped[1, 0]) == pytest.approx(20 / 0.9, abs=0.15)
    assert centre(warped[2, 0]) == pytest.approx(20 / 1.1, abs=0.15)
    # Squeezed down, the bins reading past the top repeat the top bin (39 / 1.1 = 35.5).
    np.testing.assert_allclose(warped[2, :, 36:], 7.0)
    assert warped[2, 0, 35] < 7.0
    # Stretched up, the top bin reads 0.9 * 39 = 35.1: the old top bin has left the band.
    assert warped[1, 0, -1] == pytest.approx(0.9 * bump[35] + 0.1 * bump[36], abs=1e-6)
    assert np.allclose(warped[:, 0], warped[:, 3])  # the same warp in every frame


@pytest.mark.parametrize("knob", ["freq_warp", "mixup"])
def test_batch_augmentation_is_seeded_and_changes_training(tmp_path: Path, knob: str) -> None:
    def history(**changes: object) -> list[float]:
        plain = {"epochs": 2, "freq_warp": 0.0, "mixup": 0.0}
        _, result, _ = _train(tmp_path, _config(**{**plain, **changes}))
        return [h["train_loss"] for h in result.history]

    augmented = history(**{knob: 0.2})
    assert history(**{knob: 0.2}) == augmented
    assert history() != augmented
    assert history(**{knob: 0.1}) != augmented
    _, result, _ = _train(tmp_path, _config(**{knob: 0.2}))
    assert result.best_validation_accuracy > 0.8


def test_mixup_trains_on_blended_labels(tmp_path: Path) -> None:
    # Examples blended with others, most of another class: the loss cannot reach the plain
    # loss's floor, because no logits fit both labels of such a blend at once.
    train = _toy(60, seed=1)
    config = _config(epochs=8, freq_warp=0.0, learning_rate=0.01)
    _, plain, _ = _train(tmp_path, dataclasses.replace(config, mixup=0.0), train)
    _, mixed, _ = _train(tmp_path, dataclasses.replace(config, mixup=1.0), train)
    assert plain.history[-1]["train_loss"] < 0.2 < mixed.history[-1]["train_loss"]


def test_label_smoothing_spreads_the_target_and_keeps_outputs_off_certainty(
    tmp_path: Path,
) -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    targets = torch.tensor([0, 1])
    log_p = torch.log_softmax(logits, dim=1)
    # The smoothed target: 1 - e on the label, e spread evenly over all three classes.
    e = 0.3
    target = torch.full((2, 3), e / 3)
    target[0, 0] += 1 - e
    target[1, 1] += 1 - e
    expected = float(-(target * log_p).sum(dim=1).mean())
    assert float(_blended_loss(logits, targets, 1.0, None, smoothing=e)) == pytest.approx(expected)
    assert float(_blended_loss(logits, targets, 1.0, None)) == pytest.approx(
        float(-log_p[[0, 1], [0, 1]].mean())
    )

    # Trained on a separable problem until it fits, the plain loss drives the winning
    # probability towards 1; smoothing at 0.2 holds it near 1 - 0.2 + 0.2 / 3 = 0.87, where
    # the smoothed loss is lowest.
    def confidence(smoothing: float) -> float:
        config = _config(epochs=10, learning_rate=0.01, freq_warp=0.0, label_smoothing=smoothing)
        model, result, _ = _train(tmp_path, config)
        assert result.best_validation_accuracy == 1.0
        return float(predict(model, _toy(30, seed=2).features).max(axis=1).mean())

    assert confidence(0.2) < 0.95 < confidence(0.0)


def test_learning_rate_follows_the_step_schedule(tmp_path: Path) -> None:
    config = _config(epochs=3, lr_step_epochs=2, lr_gamma=0.5, learning_rate=0.002)
    _, result, _ = _train(tmp_path, config)
    rates = [h["learning_rate"] for h in result.history]
    assert rates == pytest.approx([0.002, 0.002, 0.001])


class _Recorder(nn.Module):
    """A linear model that remembers every input batch it saw in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(SHAPE[0] * SHAPE[1], CLASSES)
        self.batches: list[torch.Tensor] = []

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.batches.append(features.detach().clone())
        return self.fc(features.flatten(1))


def test_each_epoch_uses_one_augmented_copy_of_every_clip(tmp_path: Path) -> None:
    clips, copies, epochs = 20, 3, 3
    labels = np.arange(clips) % CLASSES
    # Copy k of clip i is filled with 100 k + i, so every row seen in training names its source.
    features = np.empty((copies, clips, *SHAPE), dtype=np.float32)
    for k in range(copies):
        for i in range(clips):
            features[k, i] = 100 * k + i
    model = _Recorder()
    # Warping and mixup would blend the rows that name their source.
    config = _config(epochs=epochs, batch_size=6, freq_warp=0.0, mixup=0.0)
    train_model(model, LabeledFeatures(features, labels), _toy(6, 2), config, tmp_path / "c.pt")

    rows = torch.cat(model.batches)[:, 0, 0].round().long().tolist()
    assert len(rows) == clips * epochs
    used_copies = set()
    for epoch in range(epochs):
        seen = rows[epoch * clips : (epoch + 1) * clips]
        assert sorted(v % 100 for v in seen) == list(range(clips))
        used_copies |= {v // 100 for v in seen}
    assert used_copies == set(range(copies))


class _Fixed(nn.Module):
    """Returns the first CLASSES values of each clip's first frame as the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, 0, :CLASSES] + 0 * self.unused


def test_evaluate_counts_per_class_and_builds_the_confusion_matrix() -> None:
    # True labels and predictions chosen by hand: class 0 right twice and wrong once (as 2),
    # class 1 right once, class 2 wrong once (as 0).
    truth = [0, 0, 0, 1, 2]
    predicted = [0, 0, 2, 1, 0]
    features = np.zeros((5, *SHAPE), dtype=np.float32)
    for i, p in enumerate(predicted):
        features[i, 0, p] = 2.0
    report = evaluate(_Fixed(), LabeledFeatures(features, np.array(truth)), ["s", "u", "yes"])

    assert report["confusion"] == [[2, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert report["per_class"] == {
        "s": {"samples": 3, "correct": 2, "accuracy": 2 / 3},
        "u": {"samples": 1, "correct": 1, "accuracy": 1.0},
        "yes": {"samples": 1, "correct": 0, "accuracy": 0.0},
    }
    assert report["total"] == {"samples": 5, "correct": 3, "accuracy": 0.6}
    assert report["accuracy"] == 0.6
    right, wrong = -math.log(math.exp(2) / (math.exp(2) + 2)), -math.log(1 / (math.exp(2) + 2))
    assert report["loss"] == pytest.approx((3 * right + 2 * wrong) / 5)


def test_evaluate_reports_none_for_a_class_without_samples() -> None:
    features = np.zeros((2, *SHAPE), dtype=np.float32)
    features[:, 0, 1] = 1.0
    report = evaluate(_Fixed(), LabeledFeatures(features, np.array([1, 1])), ["s", "u", "yes"])
    assert report["per_class"]["s"] == {"samples": 0, "correct": 0, "accuracy": None}
    assert sum(c["samples"] for c in report["per_class"].values()) == 2


def test_predict_returns_probabilities() -> None:
    set_seed(0)
    model = TinyConv(SHAPE, CLASSES).train()
    probabilities = predict(model, _toy(4, 3).features)
    assert probabilities.shape == (4, CLASSES) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert model.training  # the caller's mode is restored
    again = predict(model, _toy(4, 3).features)
    assert np.array_equal(probabilities, again)  # eval mode: no dropout


def test_bad_inputs_raise_kws_error_naming_the_problem(tmp_path: Path) -> None:
    model = TinyConv(SHAPE, CLASSES)
    good = _toy(6, 1)
    checkpoint = tmp_path / "c.pt"
    mismatched = LabeledFeatures(good.features, good.labels[:5])
    with pytest.raises(KwsError, match="training set has 6 feature clips but 5 labels"):
        train_model(model, mismatched, good, _config(), checkpoint)
    empty = LabeledFeatures(np.zeros((0, *SHAPE), np.float32), np.zeros(0, np.int64))
    with pytest.raises(KwsError, match="validation set is empty"):
        train_model(model, good, empty, _config(), checkpoint)
    with pytest.raises(KwsError, match="labels go up to 5 but the model has only 3 outputs"):
        too_many = LabeledFeatures(good.features, np.arange(6))
        train_model(model, too_many, good, _config(), checkpoint)
    wrong_shape = LabeledFeatures(np.zeros((6, 30, 40), np.float32), good.labels)
    with pytest.raises(KwsError, match=r"features of shape \(30, 40\) do not fit the model"):
        evaluate(model, wrong_shape, ["a", "b", "c"])
    with pytest.raises(KwsError, match="3 outputs but 2 label names"):
        evaluate(model, good, ["a", "b"])
    with pytest.raises(KwsError, match="testing set is empty"):
        evaluate(model, empty, ["a", "b", "c"], split="testing")
    with pytest.raises(KwsError, match=r"predict needs features of shape \[N, frames, bins\]"):
        predict(model, good.features[0])
    with pytest.raises(ConfigError, match=r"train\.epochs must be at least 1"):
        train_model(model, good, good, _config(epochs=0), checkpoint)
    with pytest.raises(ConfigError, match=r"train\.label_smoothing must be in \[0, 1\), got 1"):
        train_model(model, good, good, _config(label_smoothing=1.0), checkpoint)
    with pytest.raises(ConfigError, match=r"train\.word_head must be 0 or more, got -1"):
        train_model(model, good, good, _config(word_head=-1.0), checkpoint)
    with pytest.raises(KwsError, match=r"training words must be word indices >= 0 shaped like"):
        said = LabeledFeatures(good.features, good.labels, np.zeros((2, 6), np.int64))
        train_model(model, said, good, _config(), checkpoint)
    assert not checkpoint.exists()


class _NoLinear(nn.Module):
    """Logits from a convolution alone: no classifier layer for a word head to sit beside."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, CLASSES, SHAPE)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features.reshape(-1, 1, *SHAPE)).flatten(1)


def test_word_head_trains_beside_the_model_and_is_dropped(tmp_path: Path) -> None:
    train = _toy(60, seed=1)
    # Two words per class (the class is the word's index modulo 3), six in all.
    said = LabeledFeatures(train.features, train.labels, np.arange(60) % 6)
    config = _config(epochs=2, freq_warp=0.0, word_head=1.0)
    plain, plain_result, _ = _train(tmp_path, config, train)
    off, off_result, _ = _train(tmp_path, dataclasses.replace(config, word_head=0.0), said)
    model, result, checkpoint = _train(tmp_path, config, said)
    # Without words, or with a weight of 0, training is what it was without a head.
    assert [h["train_loss"] for h in off_result.history] == [
        h["train_loss"] for h in plain_result.history
    ]
    assert all(
        torch.equal(a, b)
        for a, b in zip(off.state_dict().values(), plain.state_dict().values(), strict=True)
    )
    assert plain_result.word_classes == off_result.word_classes == 0
    # With them, the word loss is added (six words: ln 6 = 1.8 before it learns; the plain
    # first epoch's loss is about 0.5, with the head about 1.5) and the
    # model's weights move otherwise; what is left is the model alone, without the hook.
    assert result.word_classes == 6
    _, again, _ = _train(tmp_path, config, said)  # the head's weights come from the seed too
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in result.history]
    first = result.history[0]["train_loss"]
    assert first > plain_result.history[0]["train_loss"] + 0.3, (first, plain_result.history)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), plain.state_dict().values(), strict=True)
    )
    assert list(torch.load(checkpoint)) == list(plain.state_dict())
    assert not model.fc._forward_pre_hooks
    # A model whose classifier is no Linear layer cannot have a word head: the error says so.
    with pytest.raises(ConfigError, match=r"_NoLinear has none: set train\.word_head = 0"):
        train_model(_NoLinear(), said, _toy(30, seed=2), config, tmp_path / "n.pt")
