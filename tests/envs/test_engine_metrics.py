"""The env's vectorised metrics equal scikit-learn's, absent and never-predicted classes included."""
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score

from tailmix.envs.engine import batched_confusion, metrics_from_confusion


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(6))
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    c = 5
    y = rng.integers(0, c - (seed % 2), 40)  # odd seeds: the last class never occurs in y_true
    pred = rng.integers(0, c - (seed % 3 == 0), (3, 40))  # some seeds: the last class is never predicted
    got = metrics_from_confusion(batched_confusion(y, pred, c))
    labels = list(range(c))
    for k in range(3):
        kw = dict(labels=labels, average=None, zero_division=0)
        np.testing.assert_allclose(got["recall"][k], recall_score(y, pred[k], **kw))
        np.testing.assert_allclose(got["precision"][k], precision_score(y, pred[k], **kw))
        np.testing.assert_allclose(got["f1"][k], f1_score(y, pred[k], **kw))
        np.testing.assert_allclose(got["macro_f1"][k], f1_score(y, pred[k], labels=labels, average="macro",
                                                                zero_division=0))
        np.testing.assert_allclose(got["balanced_accuracy"][k], balanced_accuracy_score(y, pred[k]))
