"""Side by side: what the module fixtures that run a test's cases a few at a time stand on."""

import threading

import pytest

from neox_testing import selected_params, side_by_side


def test_calls_run_side_by_side_and_each_failure_is_its_own():
    both = threading.Barrier(2, timeout=10)  # passes only while two calls run at once

    def meet(value):
        both.wait()
        if value < 0:
            raise ValueError(value)
        return value

    done = side_by_side({"a": (meet, 1), "b": (meet, -1)})
    assert done["a"].result() == 1
    with pytest.raises(ValueError, match="-1"):
        done["b"].result()


CASES = [(1, "x"), (2, "y")]


@pytest.fixture
def selected(request):
    return selected_params(request, test_a_fixture_sees_the_cases_this_session_runs, "n", "m")


@pytest.mark.parametrize(("n", "m"), CASES)
def test_a_fixture_sees_the_cases_this_session_runs(selected, n, m):
    assert (n, m) in selected and set(selected) <= set(CASES)
    assert len(selected) == len(set(selected))
