"""A fake fleet of Chutes LLM deployments (demo mode, tests, benchmarks); see simulator/README.md."""
