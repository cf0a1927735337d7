"""TokenFactory: a Kubernetes operator for LLM serving priced per million tokens."""

__version__ = "0.1.0"
