"""The proxy service: LiteLLM with the chutes-lb routing hook, auth and input checks."""
