"""Independent slow steps of a test module (runs, conversions, a fault test's sleeps) side by
side: each `neox` process leaves a core of a small machine idle much of the time (a conversion
is one process; workers start, join their group, save and end), so a module fixture runs its
cases a few at a time, and each case's test reads its own result or raises its own failure."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def side_by_side(
    calls: Mapping[Hashable, tuple[Callable[..., Any], ...]], lanes: int = 2
) -> dict[Hashable, Future[Any]]:
    """Each `key: (function, *args)` of `calls` called, `lanes` at a time, until all have ended.
    key -> its finished future: the result, or the exception for the test that reads it."""
    with ThreadPoolExecutor(max_workers=lanes) as pool:
        return {key: pool.submit(*call) for key, call in calls.items()}


def selected_params(request: Any, test: Callable[..., Any], *names: str) -> list[Any]:
    """The values of the parameters `names` (a tuple of them for several) of each case of the
    test function `test` that this pytest session runs (what -k and the like left), in order:
    the cases a module fixture computes for it. `request` is the fixture's."""
    cases = [
        item.callspec.params
        for item in request.session.items
        if getattr(item, "originalname", None) == test.__name__
    ]
    if len(names) == 1:
        return [params[names[0]] for params in cases]
    return [tuple(params[name] for name in names) for params in cases]
