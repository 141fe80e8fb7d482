"""Metrics a researcher can cite: every number carries its protocol (metrics.json, done, W&B,
TensorBoard), real features come from a protocol-keyed cache, and the fidelity/diversity metrics
reach every output."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from gan_lab.evaluate import evaluate
from gan_lab.metrics.classifier import ClassifierFeatures
from gan_lab.metrics.evaluation import Evaluator
from gan_lab.run_dir import read_done
from gan_lab.train import train
from tests.helpers import write_fake_fashion
from tests.test_loggers import _wandb_records, read_wandb_run

FEATURE_KEYS = [
    "val/fid_classifier",
    "val/kid_classifier",
    "val/kid_classifier_std",
    "val/precision_classifier",
    "val/recall_classifier",
    "val/density_classifier",
    "val/coverage_classifier",
    "val/is_classifier",
    "val/is_classifier_std",
]
TINY_DCGAN = [
    "model.g.base_channels=8",
    "model.d.base_channels=8",
    "prior.dim=16",
    "data.batch_size=8",
    "train.iterations=4",
    "eval.every_n_iterations=2",
    "train.checkpoint_every=2",
    "callbacks=default",
]


def _wandb_config(run_dir) -> dict:
    """The config updates of the offline W&B run under ``run_dir``, merged."""
    from wandb.proto import wandb_internal_pb2

    [path] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    config = {}
    for data in _wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return config


def test_fashion_dcgan_numbers_carry_their_protocol_everywhere(make_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = tmp_path / "fashion"
    root.mkdir()
    write_fake_fashion(root, n=40)
    cfg = make_config(
        "experiment=fashion_dcgan",
        *TINY_DCGAN,
        f"data.root={root}",
        "eval.evaluator.num_real=40",
        "eval.evaluator.num_fake=30",
        f"eval.evaluator.cache_dir={tmp_path / 'cache'}",
        "logger=many",
    )
    metrics = train(cfg)
    # Exactly the keys the suite declares (what a sweep's optimized_metric is checked against).
    logged = {key for key in metrics if key.startswith("val/")}
    assert (
        logged == Evaluator.logged_keys("features", "classifier") == {*FEATURE_KEYS, "val/primary"}
    )
    protocol = read_done(tmp_path).protocol
    assert protocol["suite"] == "features" and protocol["num_fake"] == 30
    assert protocol["extractor"]["weights"] == "fashion_mnist_classifier.pt"
    assert protocol["extractor"]["sha256"].startswith("sha256:")
    assert protocol["reference"] | {"fingerprint": None} == {
        "dataset": "FashionMNIST",
        "image_shape": [1, 28, 28],
        "split": "train",
        "size": 40,
        "fingerprint": None,
    }
    assert protocol["extractor"]["preprocessing"]["resize_to"] == [28, 28]

    # The checkpoint's evaluation: every metric, the same protocol, the numbers training logged
    # at that iteration.
    result = evaluate(tmp_path / "checkpoints" / "last.ckpt")
    written = json.loads((tmp_path / "checkpoints" / "last.metrics.json").read_text())
    assert written["protocol"] == protocol
    for key in FEATURE_KEYS:
        assert written[key] == result[key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-6)

    # W&B: the protocol in the run config, every metric in the summary.
    _, summary = read_wandb_run(next(tmp_path.glob("wandb/offline-run-*/run-*.wandb")))
    assert all(key in summary for key in FEATURE_KEYS)
    assert _wandb_config(tmp_path)["eval_protocol"]["id"] == protocol["id"]
    # TensorBoard: every metric as a scalar, the protocol as text.
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert set(FEATURE_KEYS) <= set(events.Tags()["scalars"])
    text = events.Tensors("eval_protocol/text_summary")[0].tensor_proto.string_val[0].decode()
    assert protocol["id"] in text


class _Counter:
    """Counts the images the classifier extractor is shown."""

    images = 0
    original = ClassifierFeatures.features_and_logits

    @staticmethod
    def features_and_logits(extractor, x):
        _Counter.images += len(x)
        return _Counter.original(extractor, x)


@pytest.fixture
def digits_checkpoints(make_config, tmp_path):
    """iter_2.ckpt and iter_4.ckpt of a tiny digits run (no evaluation during training)."""
    train(make_config("experiment=digits_dcgan", *TINY_DCGAN, "eval=none"))
    return sorted((tmp_path / "checkpoints").glob("iter_*.ckpt"))


def _evaluate_counting(ckpt, cache, monkeypatch, *overrides):
    monkeypatch.setattr(ClassifierFeatures, "features_and_logits", _Counter.features_and_logits)
    _Counter.images = 0
    common = ["eval=classifier", "eval.evaluator.num_real=300", "eval.evaluator.num_fake=200"]
    metrics = evaluate(ckpt, [*common, f"eval.evaluator.cache_dir={cache}", *overrides])
    return metrics, _Counter.images


def test_the_second_evaluation_reads_the_real_features_from_the_cache(
    digits_checkpoints, tmp_path, monkeypatch, caplog
):
    first, second = digits_checkpoints
    cache = tmp_path / "cache"
    caplog.set_level(logging.INFO, logger="gan_lab.metrics.evaluation")
    _, shown = _evaluate_counting(first, cache, monkeypatch)
    assert shown == 300 + 200 and "real features: 300 extracted" in caplog.text
    [cached] = cache.glob("*.pt")
    caplog.clear()
    hit, shown = _evaluate_counting(second, cache, monkeypatch)
    assert shown == 200, "a hit extracts only the generated images"
    assert f"real features: 300 from the cache {cached}" in caplog.text
    # The same numbers as a fresh extraction (an empty cache elsewhere).
    fresh, shown = _evaluate_counting(second, tmp_path / "fresh", monkeypatch)
    assert shown == 500
    for key in FEATURE_KEYS:
        assert hit[key] == fresh[key], key
    stored = torch.load(cached, weights_only=True)["features"]
    assert torch.equal(stored, torch.load(next((tmp_path / "fresh").glob("*.pt")))["features"])
    # More generated samples: the same reference, still a hit; more real samples: a miss.
    assert _evaluate_counting(second, cache, monkeypatch, "eval.evaluator.num_fake=250")[1] == 250
    caplog.clear()
    _, shown = _evaluate_counting(second, cache, monkeypatch, "eval.evaluator.num_real=310")
    assert shown == 310 + 200 and "extracted" in caplog.text
    assert len(list(cache.glob("*.pt"))) == 2
    # A torn cache file: detected, recomputed to the same numbers, and rewritten whole.
    cached.write_bytes(cached.read_bytes()[:1000])
    caplog.clear()
    again, shown = _evaluate_counting(second, cache, monkeypatch)
    assert shown == 500 and f"reference features {cached} are corrupt" in caplog.text
    assert all(again[key] == hit[key] for key in FEATURE_KEYS)
    assert _evaluate_counting(second, cache, monkeypatch)[1] == 200


def test_reference_cache_detects_damage_and_survives_an_unwritable_dir(tmp_path, caplog):
    from gan_lab.metrics.reference_cache import ReferenceCache

    cache = ReferenceCache.at(tmp_path / "cache")
    features = torch.randn(50, 8)
    path = cache.save("sha256:abc", features, {"suite": "features"})
    assert torch.equal(cache.load("sha256:abc"), features)
    assert cache.load("sha256:other") is None and not list(cache.directory.glob(".*.tmp"))
    intact = path.read_bytes()
    stored = features.numpy().tobytes()
    edited = intact.replace(stored[:16], bytes(16))  # a changed value, the archive still valid
    assert edited != intact
    for damage in (intact[: len(intact) // 2], edited, b""):
        path.write_bytes(damage)
        caplog.clear()
        assert cache.load("sha256:abc") is None
        assert "are corrupt" in caplog.text and "recomputing" in caplog.text
    blocked = ReferenceCache.at(tmp_path / "file")
    (tmp_path / "file").write_text("not a directory")
    assert blocked.save("sha256:abc", features, {}) is None
    assert "reference features not cached" in caplog.text


def test_toy_suites_record_their_protocol_too():
    from gan_lab.data.toy import Ring

    evaluator = Evaluator(None, "classifier", 10, 10, 10, 10, 3, 5, 10, None)

    class Module:
        sample_seed = 0
        fixed_z = torch.zeros(1)

        def sample_noise(self, n):
            return torch.zeros(n, 2)

        def generate(self, z, batch_size):
            return z

    evaluator(Module(), Ring(), 0)
    assert evaluator.protocol["suite"] == "modes" and evaluator.protocol["num_fake"] == 2500
    assert evaluator.protocol["id"].startswith("sha256:")


def _eval_group_evaluator() -> dict:
    """The evaluator settings of eval=classifier, as a stored run config holds them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gan_lab.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["eval=classifier", "paths.output_dir=unused"])
    return OmegaConf.to_container(cfg.eval.evaluator)


def test_a_checkpoint_from_before_the_new_metrics_is_evaluated_with_them(
    digits_checkpoints, tmp_path, caplog
):
    """Its stored evaluator has no k's, IS splits or cache dir: they come from the eval group."""
    checkpoint = torch.load(digits_checkpoints[0], weights_only=True)
    cfg = checkpoint["gan_lab"]["config"]
    cfg["eval"] = {
        "every_n_iterations": 2,
        "evaluator": {
            key: value
            for key, value in _eval_group_evaluator().items()
            if key not in ("precision_recall_k", "density_coverage_k", "is_splits", "cache_dir")
        },
    }
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    caplog.set_level(logging.WARNING)
    metrics = evaluate(old, ["eval.evaluator.num_real=100", "eval.evaluator.num_fake=100"])
    assert "val/precision_classifier" in metrics and metrics["protocol"]["precision_recall_k"] == 3
    assert "eval.evaluator.precision_recall_k" in caplog.text


def test_extractors_without_a_weights_file_are_told_apart_by_their_weights():
    """The cache key of a custom extractor's features holds a sha256 of its weights: another
    instance with other weights misses instead of reading the first one's features."""
    from torch import nn

    from gan_lab.metrics.extractor import FeatureExtractor

    class Projection(FeatureExtractor):
        num_features = 4

        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x.flatten(1))

    a, b = Projection(), Projection()
    b.load_state_dict(a.state_dict())
    assert a.protocol() == b.protocol() and a.protocol()["name"] == "Projection"
    with torch.no_grad():
        b.proj.weight[0, 0] += 1
    assert a.protocol()["state_sha256"] != b.protocol()["state_sha256"]
