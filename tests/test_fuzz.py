"""Fuzzed configurations: seeded random draws over the option space, each composed from the real
configs, trained 3 iterations through ``gan_lab.train.fit`` and checked for what makes a GAN step
correct, not only for finite losses.

Draw ``i`` comes from ``random.Random(i)``, so a failure names its draw and replays alone
(``pytest tests/test_fuzz.py -k 'draw17'``). The first ``FAST_DRAWS`` run in ``make test``, the
rest are marked slow (``make test-full``). The sampler also predicts, from rules of its own,
whether a draw is invalid; the test holds the run to that prediction: an invalid draw must be
rejected before the first training step with one line naming the key, a valid one must train.
``python -m tests.test_fuzz`` prints how many draws are invalid, and why.
"""

from __future__ import annotations

import csv
import math
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from gan_lab.evaluate import evaluate
from gan_lab.gan_module import GANModule
from gan_lab.train import fit
from tests.conftest import compose_config
from tests.helpers import write_fake_fashion

FAST_DRAWS = 20  # every start-up rule the sampler knows is among them (python -m tests.test_fuzz)
ALL_DRAWS = 200
FAKE_FASHION_IMAGES = 64  # per split: small enough that k_d_steps * batch_size can exceed it

# name -> (sample size, kind); the 28x28 set is Fashion-MNIST in its IDX format, faked.
DATA = {
    "ring": (2, "toy"),
    "grid": (2, "toy"),
    "gaussian_1d": (1, "toy"),
    "digits": (64, "image"),
    "fashion_mnist": (784, "image"),
}


@dataclass
class Draw:
    """One configuration: its overrides, and the rules it breaks (empty: it must train)."""

    index: int
    overrides: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)


def draw(index: int) -> Draw:
    """The ``index``-th configuration of the option space."""
    rng = random.Random(index)
    pick = rng.choice
    result = Draw(index)
    o = result.overrides.append

    data = pick(list(DATA))
    size, kind = DATA[data]
    # DCGAN on vector data is drawn now and then, to check that it is refused.
    model = pick(["mlp", "dcgan"]) if kind == "image" else pick(["mlp"] * 9 + ["dcgan"])
    o(f"data={data}")
    o(f"model={model}")
    if model == "dcgan":
        o("model.g.base_channels=4")
        o("model.d.base_channels=4")
        if kind != "image":
            result.broken.append("dcgan needs image data")
    else:
        o(f"model.g.hidden=[{pick([8, 16])}]")
        o(f"model.d.hidden=[{pick([8, 16])}]")
        o(f"model.g.output_tanh={kind == 'image'}")

    dim = pick([1, 2, 8]) if kind == "toy" else pick([4, 8])
    if model == "mlp" and kind == "toy" and rng.random() < 0.3:
        o("model.g.skip=true")
        dim = size if rng.random() < 0.75 else dim
        if dim != size:
            result.broken.append("model.g.skip needs prior.dim = sample size")
    o(f"prior={pick(['gaussian', 'uniform'])}")
    o(f"prior.dim={dim}")

    loss = pick(["minimax", "non_saturating", "least_squares", "hinge", "wasserstein"])
    o(f"loss={loss}")
    regularizer = pick(["none", "r1", "gradient_penalty"])
    o(f"regularizer={regularizer}")
    if regularizer != "none":
        o(f"regularizer.every={pick([1, 2])}")
    spectral_norm = rng.random() < 0.3
    o(f"model.d.spectral_norm={spectral_norm}")
    if loss == "wasserstein":
        if rng.random() < 0.5:
            o("loss.clip=null")
            if regularizer != "gradient_penalty" and not spectral_norm:
                result.broken.append("wasserstein without a Lipschitz critic")
        elif spectral_norm:
            result.broken.append("weight clipping with spectral norm")

    o(f"optimizer@optimizer.g={pick(['adam', 'sgd_momentum'])}")
    o(f"optimizer@optimizer.d={pick(['adam', 'sgd_momentum'])}")

    batch_size, pack = pick([8, 12, 16, 32]), pick([1, 1, 1, 2, 2, 3, 4])
    k_d_steps = pick([1, 2, 3])
    o(f"data.batch_size={batch_size}")
    o(f"model.d.pack={pack}")
    o(f"train.k_d_steps={k_d_steps}")
    if batch_size % pack:
        result.broken.append("model.d.pack must divide data.batch_size")
    if data == "fashion_mnist" and k_d_steps * batch_size > FAKE_FASHION_IMAGES:
        result.broken.append("k_d_steps * batch_size > training images")

    ema = pick([None, 0.9, 0.999])
    o(f"train.ema_decay={'null' if ema is None else ema}")
    o(f"train.ema_warmup={pick([True, False])}")
    o(f"instance_noise={pick(['none', 'gaussian'])}")
    o("train.compile=false")
    o(f"seed={index}")
    return result


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fashion")
    write_fake_fashion(root, FAKE_FASHION_IMAGES)
    return root


# Three iterations, an evaluation and a checkpoint at iteration 2 and at the end (3), every
# iteration logged; small evaluation sets.
RUN = [
    "logger=csv",
    "callbacks=default",
    "trainer.enable_progress_bar=false",
    "train.iterations=3",
    "train.log_every=1",
    "train.nan_check_every=1",
    "train.sample_every=2",
    "train.checkpoint_every=2",
    "eval.every_n_iterations=2",
]
IMAGE_EVAL = [
    "eval.evaluator.num_real=64",
    "eval.evaluator.num_fake=64",
    "eval.evaluator.batch_size=32",
    "eval.evaluator.kid_subset_size=32",
]


def _parameters(*nets: torch.nn.Module | None) -> list[torch.Tensor]:
    return [p.detach().clone() for net in nets if net is not None for p in net.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    # NaN-aware: a diverged net that no step touched is still "the same" (the run's stop reason
    # then says what went wrong).
    return all(
        torch.allclose(x, y, rtol=0, atol=0, equal_nan=True) for x, y in zip(a, b, strict=True)
    )


class StepChecks:
    """Wraps GANModule's D and G steps: a D step moves D and leaves G (and its EMA) as they
    were; a G step moves G and leaves D as it was. Records whether training began."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = False
        self.d_steps = self.g_steps = 0
        d_step, g_step = GANModule.discriminator_step, GANModule.generator_step
        checks = self

        def checked_d_step(module: GANModule, real: torch.Tensor, optimizer: object) -> object:
            checks.started = True
            g_before = _parameters(module.generator, module.generator_ema)
            d_before = _parameters(module.discriminator)
            out = d_step(module, real, optimizer)
            assert _same(g_before, _parameters(module.generator, module.generator_ema)), (
                "a D step changed G"
            )
            assert not _same(d_before, _parameters(module.discriminator)), "a D step left D"
            checks.d_steps += 1
            return out

        def checked_g_step(module: GANModule, batch_size: int, optimizer: object) -> object:
            g_before = _parameters(module.generator)
            d_before = _parameters(module.discriminator)
            out = g_step(module, batch_size, optimizer)
            assert _same(d_before, _parameters(module.discriminator)), "a G step changed D"
            assert not _same(g_before, _parameters(module.generator)), "a G step left G"
            checks.g_steps += 1
            return out

        monkeypatch.setattr(GANModule, "discriminator_step", checked_d_step)
        monkeypatch.setattr(GANModule, "generator_step", checked_g_step)


def _logged(run_dir: Path) -> dict[int, dict[str, float]]:
    """metrics.csv as {step: {key: value}}, empty cells left out."""
    rows: dict[int, dict[str, float]] = {}
    with (run_dir / "metrics.csv").open(newline="") as file:
        for row in csv.DictReader(file):
            step = int(float(row.pop("step")))
            rows.setdefault(step, {}).update({k: float(v) for k, v in row.items() if v})
    return rows


def check_draw(index: int, tmp_path: Path, fashion_root: Path, monkeypatch) -> None:
    case = draw(index)
    overrides = list(case.overrides)
    if "data=fashion_mnist" in overrides:
        overrides.append(f"data.root={fashion_root}")
    if any(o in overrides for o in ("data=digits", "data=fashion_mnist")):
        overrides += IMAGE_EVAL
    cfg = compose_config([*RUN, *overrides], tmp_path)
    checks = StepChecks(monkeypatch)
    try:
        run = fit(cfg)
    except Exception as error:
        # Refused at start-up, before the first D step, with one line; never mid-run.
        assert not checks.started, f"draw {index} crashed after training began: {error!r}"
        assert case.broken, f"draw {index} was refused but breaks no rule: {error}"
        message = str(error)
        assert "\n" not in message and "=" in message.split(":")[0], message
        return
    assert not case.broken, f"draw {index} breaks {case.broken} but trained"
    k = cfg.train.k_d_steps
    assert (checks.d_steps, checks.g_steps) == (3 * k, 3)
    assert run.module.iteration == 3 and run.module.stop_reason is None

    logged = _logged(tmp_path)
    for step in (1, 2, 3):
        for key in ("train/d_loss", "train/g_loss"):
            assert math.isfinite(logged[step][key]), (step, key, logged[step][key])
    checkpoints = tmp_path / "checkpoints"
    for step, ckpt in ((2, checkpoints / "iter_0000002.ckpt"), (3, checkpoints / "last.ckpt")):
        again = evaluate(ckpt)
        assert again["iteration"] == step
        metric_keys = ("val/", "toy/", "theory/")
        expected = {key: v for key, v in logged[step].items() if key.startswith(metric_keys)}
        assert expected and "val/primary" in expected, logged[step]
        for key, value in expected.items():
            assert again[key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), key


@pytest.mark.parametrize("index", range(FAST_DRAWS), ids=lambda i: f"draw{i}")
def test_fuzzed_configuration(index, tmp_path, fashion_root, monkeypatch):
    check_draw(index, tmp_path, fashion_root, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(FAST_DRAWS, ALL_DRAWS), ids=lambda i: f"draw{i}")
def test_fuzzed_configuration_full(index, tmp_path, fashion_root, monkeypatch):
    check_draw(index, tmp_path, fashion_root, monkeypatch)


def summary(n: int = ALL_DRAWS) -> str:
    """How many of the first ``n`` draws are invalid, by rule (a draw may break several)."""
    draws = [draw(i) for i in range(n)]
    rules = Counter(rule for d in draws for rule in d.broken)
    invalid = sum(bool(d.broken) for d in draws)
    lines = [f"{n} draws, {invalid} invalid (refused at start-up), {n - invalid} trained"]
    lines += [f"  {count:3d}  {rule}" for rule, count in rules.most_common()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(int(sys.argv[1]) if len(sys.argv) > 1 else ALL_DRAWS))
    print(summary(FAST_DRAWS))
