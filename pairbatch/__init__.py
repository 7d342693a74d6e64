"""pairbatch: comparative-judgement pairs through LLM batch APIs."""

__version__ = "0.1.0"
