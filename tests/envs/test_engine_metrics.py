"""The env's vectorised metrics equal scikit-learn's, absent and never-predicted classes included."""
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score

from tailmix.classifiers.metrics import batched_confusion, metrics_from_confusion


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
        # macro-F1 averages over the classes in y or pred (sklearn's default labels; classifiers.metrics)
        np.testing.assert_allclose(got["macro_f1"][k], f1_score(y, pred[k], average="macro", zero_division=0))
        np.testing.assert_allclose(got["balanced_accuracy"][k], balanced_accuracy_score(y, pred[k]))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_val_infos_and_test_report_agree_on_the_same_predictions():
    """Pixel mode scores val and test with one CNN: with test = val (a class absent from both), the val metrics
    in the infos (the env's batched path) equal the test report's (classifiers.metrics.classification_report)."""
    from tailmix.envs.datasets import LongTailDataset
    from tailmix.envs.synthetic_ratio import SyntheticRatioEnv
    from tests.conftest import make_tiny_dataset

    ds = make_tiny_dataset(num_classes=4, counts=(24, 10, 6, 4))
    keep = ds.val_labels != 3
    val = (ds.val_images[keep], ds.val_labels[keep])
    same = LongTailDataset("tiny-same", ds.train_images, ds.train_labels, *val, *val, class_names=ds.class_names)
    env = SyntheticRatioEnv(dataset=same, mode="pixel", max_steps=1, eval_split="test", epochs_per_step=1)
    env.reset(seed=0)
    *_, infos = env.step({a: np.zeros(1, np.float32) for a in env.agents})
    for c, agent in enumerate(env.possible_agents):
        info, test = infos[agent], infos[agent]["test"]
        assert info["balanced_accuracy"] == test["balanced_accuracy"]
        assert info["macro_f1"] == test["macro_f1"]
        for key in ("recall", "precision", "f1"):
            assert info[key] == test[key][c]
