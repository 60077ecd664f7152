"""Ray Client fidelity (issue 17): behaviours where gray differed from a stock
Ray 2.60.0 head serving the same stock client."""

import os
import time

import pytest

from conftest import run_client_script


def test_wait_refuses_duplicate_refs(ray_client):
    """ray.wait's ValueError on the server reaches the client as the failed
    wait request, as with a stock head (item 8)."""
    ray = ray_client
    x = ray.put(1)
    y = ray.put(2)
    with pytest.raises(Exception, match="Client Wait request failed"):
        ray.wait([x, x])
    with pytest.raises(Exception, match="Client Wait request failed"):
        ray.wait([x, y], num_returns=3)
    with pytest.raises(Exception, match="Client Wait request failed"):
        ray.wait([x], num_returns=0)
    assert ray.wait([]) == ([], [])
    ready, rest = ray.wait([x, y], num_returns=2)
    assert sorted(ray.get(ready)) == [1, 2] and rest == []
