"""Matthews correlation equals scikit-learn's, the degenerate cases included (a constant guess
reads 0, not the small positive value torchmetrics 1.9 gives)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import matthews_corrcoef

from hnet_dna.tasks.classifier import classification_metrics
from hnet_dna.tasks.metrics import MatthewsCorrCoef


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_mcc_equals_scikit_learn_over_batches(classes):
    g = torch.Generator().manual_seed(classes)
    labels = torch.randint(0, classes, (300,), generator=g)
    pred = torch.where(torch.rand(300, generator=g) < 0.6, labels, torch.randint(0, classes, (300,), generator=g))
    metric = MatthewsCorrCoef(num_classes=classes)
    for lo in range(0, 300, 70):
        metric.update(pred[lo:lo + 70], labels[lo:lo + 70])
    assert float(metric.compute()) == pytest.approx(matthews_corrcoef(labels, pred), abs=1e-6)


@pytest.mark.parametrize("classes", [2, 3])
def test_a_constant_guess_has_mcc_zero(classes):
    labels = torch.zeros(100, dtype=torch.long)
    labels[:30] = 1
    guess = torch.zeros(100, classes)
    guess[:, 0] = 1.0  # always the first class
    metrics = classification_metrics(classes)
    metrics["mcc"].update(guess, labels)
    assert float(metrics["mcc"].compute()) == 0.0 == matthews_corrcoef(labels, np.zeros(100))


def test_a_split_with_one_class_has_mcc_zero():
    metric = MatthewsCorrCoef(num_classes=2)
    metric.update(torch.zeros(10, dtype=torch.long), torch.zeros(10, dtype=torch.long))
    assert float(metric.compute()) == 0.0  # scikit-learn's value; torchmetrics 1.9 says 1
