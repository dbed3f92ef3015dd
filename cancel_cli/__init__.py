"""cancel: reproduce "The Cancellation Hypothesis in Critic-Free RL" on any causal LM."""

__version__ = "0.1.0"
