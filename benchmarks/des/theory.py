"""Closed-form values the simulation is validated against."""
from __future__ import annotations


def mm1_sojourn(lam: float, mu: float = 1.0) -> float:
    """M/M/1 mean sojourn time 1/(mu - lambda) (random routing splits Poisson into Poisson)."""
    return 1.0 / (mu - lam)


def supermarket_sojourn(lam: float, d: int = 2, terms: int = 60) -> float:
    """Mean sojourn of JSQ(d) over n -> inf single-server FIFO queues, service rate 1.

    Mitzenmacher, "The power of two choices in randomized load balancing", IEEE TPDS 12(10),
    2001 (also Vvedenskaya, Dobrushin & Karpelevich 1996): the fixed point is
    s_i = lambda^((d^i - 1)/(d - 1)) = fraction of queues with at least i customers. Mean queue
    length = sum_{i>=1} s_i; Little's law (arrival rate lambda per queue) gives
    E[T] = sum_{i>=1} lambda^((d^i - 1)/(d - 1) - 1), i.e. sum_{i>=1} lambda^(2^i - 2) for d = 2.
    """
    total = 0.0
    for i in range(1, terms):
        e = (d**i - 1) // (d - 1) - 1
        term = lam**e
        total += term
        if term < 1e-15:
            break
    return total


def erlang_b(servers: int, offered: float) -> float:
    """Erlang-B blocking probability (stable recursion); insensitive to the service distribution."""
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return b
