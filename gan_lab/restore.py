"""Restoring a fit from a checkpoint whose budget or optimizer settings this run changes.

Used by ``GANModule`` while Lightning restores a checkpoint (``on_load_checkpoint``, before the
loops and optimizers are restored) and once it has (``on_train_start``). What a resume may
change is decided before, in gan_lab/resume.py.
"""

from __future__ import annotations

from typing import Any

import torch

from gan_lab.errors import UserError

_ABSENT = object()


class WeightsMismatch(UserError, ValueError):
    """A checkpoint whose weights do not fit the nets this run's config builds."""


def check_weights_fit(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Refuse, in one line, a checkpoint whose tensors differ from the module's in names or
    shapes (other net sizes or EMA settings under ``resume.allow_changes=true``): Lightning
    would stop with a size-mismatch traceback."""
    problems = [
        f"{key} is {tuple(saved[key].shape)} there, {tuple(value.shape)} here"
        for key, value in expected.items()
        if key in saved and tuple(saved[key].shape) != tuple(value.shape)
    ]
    problems += [f"{key} is missing there" for key in expected if key not in saved]
    problems += [f"{key} is not in this run's nets" for key in saved if key not in expected]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise WeightsMismatch(
            f"the checkpoint's weights do not fit the nets of this config: "
            f"{'; '.join(problems[:3])}{more}; resume with the checkpoint's model settings"
        )


def reopen_training(checkpoint: dict[str, Any]) -> None:
    """Let Lightning train on from a checkpoint written at the end of a budget.

    Such a checkpoint records its epoch as ended (``is_last_batch``, or the epoch completed when
    written after it): restored as is, the fit loop ends at once, so extending a finished run or
    warm-starting from one would train nothing. The batch counters stay, so the run continues
    at the checkpoint's iteration until ``limit_train_batches`` (the new budget).
    """
    fit_loop = checkpoint.get("loops", {}).get("fit_loop")
    if not fit_loop:
        return
    batch_progress = fit_loop.get("epoch_loop.batch_progress")
    if batch_progress is not None:
        batch_progress["is_last_batch"] = False
    for progress in (fit_loop.get("epoch_progress") or {}).values():
        progress["processed"] = progress["completed"] = 0


def optimizer_updates(
    stored: dict[str, Any] | None, configured: dict[str, Any] | None
) -> dict[str, set[str]]:
    """Per optimizer (``g``, ``d``): the settings this run's config changes from the
    checkpoint's config, e.g. ``{"lr"}`` (``_target_`` aside: a change of optimizer type shows
    in its state, see ``apply_optimizer_updates``)."""
    updates: dict[str, set[str]] = {}
    for name, new in ((configured or {}).get("optimizer") or {}).items():
        old = ((stored or {}).get("optimizer") or {}).get(name) or {}
        settings = new.keys() - {"_target_", "_partial_"}
        updates[name] = {key for key in settings if old.get(key, _ABSENT) != new[key]}
    return updates


def apply_optimizer_updates(
    optimizers: dict[str, torch.optim.Optimizer], updates: dict[str, set[str]]
) -> None:
    """Give restored optimizers the configured settings that ``updates`` names.

    Lightning restores an optimizer's param groups from the checkpoint, overwriting what the
    config gave it; ``optimizer.defaults`` still holds the configured values. A changed
    learning rate also resets ``initial_lr`` (LinearLRDecay's base). Param groups whose settings
    are not this optimizer's (another type, e.g. Adam's state for SGD, under
    ``resume.allow_changes``) cannot be continued: that optimizer starts afresh, with no state
    and the configured settings.
    """
    for name, optimizer in optimizers.items():
        keys = updates.get(name, set())
        for group in optimizer.param_groups:
            if group.keys() - {"params", "initial_lr"} != optimizer.defaults.keys():
                optimizer.state.clear()
                params = group["params"]
                group.clear()
                group.update(optimizer.defaults, params=params)
                continue
            for key in keys & optimizer.defaults.keys():
                group[key] = optimizer.defaults[key]
                if key == "lr" and "initial_lr" in group:
                    group["initial_lr"] = optimizer.defaults[key]
