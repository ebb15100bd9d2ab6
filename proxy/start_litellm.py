#!/usr/bin/env python3
"""The seed's start-up script, kept as a thin entry point over ``python -m chutes_lb.proxy``:
validates settings (fails fast naming a missing secret), then runs the LiteLLM proxy workers."""
import sys

from chutes_lb.proxy.__main__ import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
