"""The chatgw worker: Dramatiq actors that run the agent and write every run event to Redis."""
