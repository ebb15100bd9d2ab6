"""Discrete-event simulation of the routing: every simulated replica runs the real ``RoutingCore`` (see ``sim.py``)."""
