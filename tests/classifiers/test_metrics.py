import numpy as np
import pytest
from sklearn.metrics import (balanced_accuracy_score, f1_score, precision_recall_fscore_support)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from tailmix.classifiers.metrics import (balanced_accuracy, classification_report, confusion_matrix, macro_f1,
                                 per_class_metrics, shot_groups)

# Hand-checked example: class 2 is never predicted.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 1, 0, 1])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[2, 1, 0], [1, 1, 0], [0, 1, 0]]


def test_hand_computed_metrics():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    p, r, f = per_class_metrics(cm)
    assert np.allclose(p, [2 / 3, 1 / 3, 0.0])
    assert np.allclose(r, [2 / 3, 1 / 2, 0.0])
    assert np.allclose(f, [2 / 3, 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2), 0.0])
    assert balanced_accuracy(cm) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert macro_f1(cm) == pytest.approx(f.mean())


def _random_case(seed, c=6, n=200):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, c, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, c, n))
    y_pred[y_pred == c - 1] = 0  # class c-1 is never predicted
    return y_true, y_pred, c


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed):
    y_true, y_pred, c = _random_case(seed)
    cm = confusion_matrix(y_true, y_pred, c)
    assert np.array_equal(cm, sk_confusion_matrix(y_true, y_pred, labels=range(c)))
    p, r, f = per_class_metrics(cm)
    sp, sr, sf, _ = precision_recall_fscore_support(y_true, y_pred, labels=range(c), zero_division=0)
    assert np.allclose(p, sp) and np.allclose(r, sr) and np.allclose(f, sf)
    assert p[c - 1] == 0 and f[c - 1] == 0
    assert balanced_accuracy(cm) == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert macro_f1(cm) == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    rep = classification_report(y_true, y_pred, c)
    assert rep["accuracy"] == pytest.approx(np.mean(y_true == y_pred))


def test_class_missing_from_y_true_matches_sklearn():
    # class 3 never occurs in y_true: balanced accuracy skips it (sklearn does too, with a warning)
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 3, 1, 0, 2, 2])
    cm = confusion_matrix(y_true, y_pred, 5)
    with pytest.warns(UserWarning):
        expected = balanced_accuracy_score(y_true, y_pred)
    assert balanced_accuracy(cm) == pytest.approx(expected)
    # macro F1 averages over classes seen in y_true or y_pred (sklearn's default labels); 4 is in neither
    assert macro_f1(cm) == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))


def test_empty_inputs():
    cm = confusion_matrix(np.zeros(0, int), np.zeros(0, int), 3)
    assert cm.shape == (3, 3) and cm.sum() == 0
    assert np.isnan(balanced_accuracy(cm)) and np.isnan(macro_f1(cm))


def test_confusion_matrix_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix([0, 1], [-1, 1], 2)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix([0.5, 1.0], [0, 1], 2)


def test_shot_groups_thresholds():
    counts = np.array([500, 101, 100, 20, 19, 3])
    g = shot_groups(counts, (100, 20))
    assert g["many"].tolist() == [0, 1]
    assert g["medium"].tolist() == [2, 3]
    assert g["few"].tolist() == [4, 5]
    with pytest.raises(ValueError, match="hi >= lo"):
        shot_groups(counts, (20, 100))


@pytest.mark.parametrize("counts,many,medium,few", [
    ([486, 128, 206, 194, 66], [0, 2], [3], [1, 4]),
    ([147, 399], [1], [], [0]),
    ([30, 20, 10], [0], [1], [2]),
    ([5, 9, 9, 1, 7, 3, 8, 2, 6, 4], [1, 2, 6], [0, 4, 8, 9], [3, 5, 7]),
])
def test_shot_groups_terciles(counts, many, medium, few):
    g = shot_groups(np.array(counts))
    assert g["many"].tolist() == many and g["medium"].tolist() == medium and g["few"].tolist() == few
    assert sorted(np.concatenate(list(g.values())).tolist()) == list(range(len(counts)))


def test_classification_report():
    train_counts = np.array([300, 50, 5])
    rep = classification_report(Y_TRUE, Y_PRED, 3, train_counts=train_counts, thresholds=(100, 20))
    assert set(rep) >= {"accuracy", "balanced_accuracy", "macro_f1", "precision", "recall", "f1",
                        "many_shot", "medium_shot", "few_shot", "confusion_matrix"}
    assert rep["accuracy"] == pytest.approx(3 / 6)
    assert rep["many_shot"] == pytest.approx(2 / 3)
    assert rep["medium_shot"] == pytest.approx(1 / 2)
    assert rep["few_shot"] == 0.0
    assert rep["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [0, 1, 0]]
    assert all(isinstance(v, list) for v in (rep["precision"], rep["recall"], rep["f1"]))
    # an empty group gives nan; no train counts gives nan
    rep = classification_report(Y_TRUE, Y_PRED, 3, train_counts=np.array([300, 200, 150]), thresholds=(100, 20))
    assert np.isnan(rep["few_shot"]) and np.isnan(rep["medium_shot"]) and rep["many_shot"] == pytest.approx(
        rep["balanced_accuracy"])
    assert np.isnan(classification_report(Y_TRUE, Y_PRED, 3)["many_shot"])
    with pytest.raises(ValueError, match="train_counts"):
        classification_report(Y_TRUE, Y_PRED, 3, train_counts=[1, 2])


# -- one definition for val (the env's batched path) and test (the report) --------------------------
def _both_paths(y_true, preds, num_classes):
    """The env's val metrics (``metrics_from_confusion`` of ``batched_confusion``, as ``envs.core`` scores the
    val split) and the test report (``classification_report``, as ``envs.core.test_report``) of ``preds``."""
    from tailmix.classifiers.metrics import batched_confusion, metrics_from_confusion

    val = metrics_from_confusion(batched_confusion(y_true, preds, num_classes))
    test = [classification_report(y_true, p, num_classes) for p in preds]
    return val, test


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(12))
def test_val_and_test_paths_agree_to_the_bit_with_absent_classes(seed):
    rng = np.random.default_rng(seed)
    c = 6
    y = rng.choice([0, 1, 2, 4], 50)  # classes 3 and 5 never occur in y_true
    preds = rng.choice([0, 1, 2, 3, 4] if seed % 2 else [0, 1, 2, 4], (4, 50))  # 5 is never predicted
    preds[0] = y  # a perfect head
    val, test = _both_paths(y, preds, c)
    for k, rep in enumerate(test):
        assert val["balanced_accuracy"][k] == rep["balanced_accuracy"]
        assert val["macro_f1"][k] == rep["macro_f1"]
        for key in ("recall", "precision", "f1"):
            assert val[key][k].tolist() == rep[key]
        # the definitions: sklearn's balanced accuracy, and macro-F1 over the classes in y_true or y_pred
        assert rep["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, preds[k]))
        assert rep["macro_f1"] == pytest.approx(f1_score(y, preds[k], average="macro", zero_division=0))
    # absent classes cost a perfect head nothing
    assert val["macro_f1"][0] == 1.0 and val["balanced_accuracy"][0] == 1.0


def test_macro_f1_skips_a_class_absent_from_labels_and_predictions():
    y = np.array([0, 0, 1, 1])
    pred = np.array([[0, 1, 1, 1]])
    val, (rep,) = _both_paths(y, pred, 3)  # class 2: no label, no prediction
    f1 = [2 / 3, 0.8]
    assert val["macro_f1"][0] == rep["macro_f1"] == pytest.approx(np.mean(f1))  # not sum(f1) / 3
