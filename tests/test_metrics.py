import numpy as np
import pytest

from vprbench.evaluate.metrics import first_hit_rank, recall_at_k


def test_recall_hand_made_case():
    # 4 queries, top-3 predictions each.
    predictions = np.array(
        [
            [3, 1, 2],  # positives {1}: first hit at rank 1
            [0, 5, 6],  # positives {0}: hit at rank 0
            [7, 8, 9],  # positives {2}: never
            [4, -1, -1],  # positives {9, 4}: hit at rank 0
        ]
    )
    positives = [np.array([1]), np.array([0]), np.array([2]), np.array([4, 9])]
    assert first_hit_rank(predictions, positives).tolist() == [1, 0, -1, 0]
    result = recall_at_k(predictions, positives, ks=(1, 2, 3))
    assert result.recall == {1: 0.5, 2: 0.75, 3: 0.75}
    assert result.num_evaluated == 4 and result.num_without_positives == 0


def test_queries_without_positives_policy():
    predictions = np.array([[0, 1], [1, 0], [2, 0]])
    positives = [np.array([0]), np.array([], dtype=np.int64), np.array([0])]
    miss = recall_at_k(predictions, positives, ks=(1, 2), no_positive_policy="miss")
    # query 0 hits at 1; query 1 has no positives (a miss); query 2 hits at 2.
    assert miss.recall == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}
    assert miss.num_evaluated == 3 and miss.num_without_positives == 1
    exclude = recall_at_k(predictions, positives, ks=(1, 2), no_positive_policy="exclude")
    assert exclude.recall == {1: 0.5, 2: 1.0}
    assert exclude.num_evaluated == 2 and exclude.num_without_positives == 1


def test_minus_one_is_never_a_hit_and_recall_is_monotone():
    predictions = np.array([[-1, -1, 3]])
    result = recall_at_k(predictions, [np.array([3])], ks=(1, 2, 3))
    assert result.recall == {1: 0.0, 2: 0.0, 3: 1.0}


def test_k_larger_than_predictions_and_bad_policy():
    with pytest.raises(ValueError, match="exceeds"):
        recall_at_k(np.zeros((1, 2), dtype=int), [np.array([0])], ks=(5,))
    with pytest.raises(ValueError, match="no_positive_policy"):
        recall_at_k(np.zeros((1, 2), dtype=int), [np.array([0])], no_positive_policy="drop")
    with pytest.raises(ValueError, match="every query lacks positives"):
        recall_at_k(np.zeros((1, 1), dtype=int), [np.array([], dtype=int)], (1,), "exclude")
