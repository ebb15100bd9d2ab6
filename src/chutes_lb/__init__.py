"""chutes_lb: a herd-proof, capacity-aware load balancer for Chutes AI behind LiteLLM.

Packages: ``settings`` (configuration), ``fleet`` (the one list of chutes), ``snapshot``
(the Redis layout of the utilization snapshot), ``simulator`` (a fake Chutes fleet),
``poller`` (the utilization-poller service), ``routing`` (the pure decision logic and the
LiteLLM hook).
"""
__version__ = "0.1.0"
