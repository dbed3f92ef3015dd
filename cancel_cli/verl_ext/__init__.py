"""verl integration: a plugin (``verl.plugins`` entry point) that registers the ``cancel_sync`` trainer
(verl's v1 sync trainer with QB / sign-partitioned layouts and the per-token probe), the reward-
balanced replay-buffer sampler, the hydra config, the math-verify reward, and the launcher behind
``cancel train --engine verl``.  Heavy verl imports happen only inside the submodules."""
