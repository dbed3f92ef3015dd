"""GRPO core: advantages, the Eq. 15 loss, mini-batch plans, reward-balanced batching, one update, trainer."""
