"""Fleet simulator speaking vLLM's metric names (``tokenfactory sim``)."""
