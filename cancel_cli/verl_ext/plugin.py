"""Entry point of the ``verl.plugins`` group: ``import verl`` (in every process, Ray workers included)
imports this module, which registers the ``cancel_sync`` trainer.  verl only logs a failing plugin at
debug level, so ``registered()`` lets callers assert that registration happened."""

from __future__ import annotations


def register() -> None:
    import importlib

    importlib.import_module(f"{__package__}.trainer")  # the class decorator registers the trainer


def registered() -> bool:
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    from .trainer import TRAINER_NAME

    return TRAINER_NAME in TRAINER_REGISTRY


register()
