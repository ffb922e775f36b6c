"""The user-sequence record (pure core)."""
import numpy as np
import pytest

from features.sequences import UserSequence


def test_a_user_sequence_refuses_bad_tokens():
    assert UserSequence("u1", [0, 5, 7]).tokens == [0, 5, 7]
    assert UserSequence("u1", []).tokens == []
    for bad in ([3, -1], [3, 2.0], [3, "4"], [np.int64(3)], [True]):
        with pytest.raises(ValueError, match="non-negative ints"):
            UserSequence("u1", bad)
    with pytest.raises(ValueError, match="user_id"):
        UserSequence("", [1])
