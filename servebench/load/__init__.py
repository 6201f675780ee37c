"""The load: prompts, when each request is released (schedule), the load loop, and the processes or Ray actors that drive it."""
