"""Clean metrics: error, NLL, dataset-level ECE (torchmetrics) and the authors' batch-averaged ECE."""

import numpy as np
import pytest
import torch
from torch import nn

from trainables.evaluate import (N_BINS, batch_averaged_ece, classification_metrics, predict_logits,
                                 reliability_bins)


def reference_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Equal-width bins (lo, hi], |accuracy - confidence| weighted by bin share."""
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
    return total


@pytest.fixture
def predictions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1000, 10, generator=g) * 2.5
    labels = torch.where(torch.rand(1000, generator=g) < 0.6, logits.argmax(1), torch.randint(10, (1000,), generator=g))
    return logits, labels


def test_metrics_match_direct_computation(predictions):
    logits, labels = predictions
    m = classification_metrics(logits, labels)
    probs = logits.softmax(1).numpy()
    assert m["error"] == pytest.approx((probs.argmax(1) != labels.numpy()).mean())
    assert m["nll"] == pytest.approx(-np.log(probs[np.arange(1000), labels.numpy()]).mean(), rel=1e-5)
    assert m["ece"] == pytest.approx(reference_ece(probs, labels.numpy()), abs=1e-5)
    per_batch = [reference_ece(probs[i : i + 100], labels.numpy()[i : i + 100]) for i in range(0, 1000, 100)]
    assert m["ece_batch100"] == pytest.approx(np.mean(per_batch), abs=1e-5)
    assert m["ece_batch100"] > m["ece"]  # small batches inflate ECE, as METHOD.md warns


def test_reliability_bins_reproduce_ece(predictions):
    logits, labels = predictions
    probs = logits.softmax(1)
    bins = reliability_bins(probs, labels)
    count, conf, acc = (np.array(bins[k]) for k in ("count", "confidence", "accuracy"))
    assert len(count) == N_BINS and count.sum() == 1000
    ece = (count / 1000 * np.abs(acc - conf)).sum()
    assert ece == pytest.approx(classification_metrics(logits, labels)["ece"], abs=1e-5)


def test_perfectly_calibrated_confident_predictions_have_zero_ece():
    logits = torch.eye(10).repeat(10, 1) * 50
    labels = torch.arange(10).repeat(10)
    m = classification_metrics(logits, labels)
    assert m["error"] == 0 and m["ece"] < 1e-6 and m["nll"] < 1e-6
    assert batch_averaged_ece(logits.softmax(1), labels).item() < 1e-6


def test_predict_logits_normalises_batches_and_drops_the_sink_class():
    images = torch.randint(0, 256, (23, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)

    class Probe(nn.Module):  # returns the per-channel mean of its input, plus a sink output
        def forward(self, x):
            return torch.cat([x.mean(dim=(2, 3)), torch.full((len(x), 1), 99.0)], dim=1)

    logits = predict_logits(Probe(), images, mean, std, num_classes=3, batch_size=5)
    expected = (images.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert logits.shape == (23, 3)
    torch.testing.assert_close(logits, expected.mean(dim=(2, 3)))
    flipped = predict_logits(Probe(), images, mean, std, num_classes=3, transform=lambda x: 1 - x)
    assert not torch.allclose(flipped, logits)
