"""Loggers write what dashboards read: W&B offline summary, TensorBoard scalars and images."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import read_write

from gan_lab.config import CONF_DIR
from gan_lab.run_dir import read_done
from gan_lab.train import train

TOY = ["experiment=ring_mlp", "data.batch_size=16", "train.iterations=6", "train.log_every=2"]


def test_wandb_offline_run_has_training_metrics(make_config, tmp_path):
    cfg = make_config(*TOY, "logger=wandb", "callbacks=default", "train.sample_every=3")
    train(cfg)
    runs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1, list(tmp_path.rglob("*"))
    history, summary = read_wandb_run(runs[0])
    for key in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"):
        assert key in summary, summary.keys()
        assert key in history[-1]
    assert any(key.startswith("samples") for row in history for key in row)


def _wandb_records(path) -> list[bytes]:
    """Payloads of a W&B transaction log: a 7-byte ':W&B' header, then LevelDB-log framing
    (32 KiB blocks; record = crc32 (4), length (2, LE), type (1 full, 2-4 first/middle/last)).
    The SDK no longer ships a reader, so the test parses the documented format itself."""
    raw, block = path.read_bytes(), 32768
    assert raw[:4] == b":W&B", "not a W&B transaction log"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # trailing block padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(raw[pos + 4 : pos + 6], "little"), raw[pos + 6]
        payload, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        pending += payload
        if kind in (1, 4):
            records.append(pending)
            pending = b""
    return records


def read_wandb_run(path) -> tuple[list[dict], dict]:
    """History rows and final summary of an offline W&B run, read from its .wandb record file."""
    from wandb.proto import wandb_internal_pb2

    history, summary = [], {}
    for data in _wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {
                    item.key or "/".join(item.nested_key): item.value_json
                    for item in record.history.item
                }
            )
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return history, summary


def test_study_labels_group_the_jobs_of_a_multirun(tmp_path):
    """W&B groups a multirun's jobs by its sweep folder; a single run has no group."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gan_lab.loggers import hydra_study_labels

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["loss=hinge", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
            return_hydra_config=True,
        )
    try:
        for mode, group in ((RunMode.RUN, None), (RunMode.MULTIRUN, "sweep")):
            with read_write(cfg.hydra):
                cfg.hydra.mode = mode
            HydraConfig.instance().set_config(cfg)
            labels = hydra_study_labels()
            assert labels.get("group") == group, (mode, labels)
            assert "loss:hinge" in labels["tags"]
    finally:
        HydraConfig.instance().cfg = None


def test_run_names_keep_what_the_sweep_varies():
    from gan_lab.loggers import run_name

    job = [
        "experiment=ring_mlp",
        "loss=hinge",
        "seed=1",
        "optimizer.g.lr=0.000123456",
        "train.iterations=1500",
        "trainer.enable_progress_bar=false",
        "ckpt_path=last",
        "optimizer@optimizer.d=sgd_momentum",
    ]
    swept = {"loss", "seed", "optimizer.g.lr", "optimizer@optimizer.d"}
    # Keys without their group (unless two would read alike); floats to 3 digits.
    assert run_name(job, swept, "ring_mlp") == (
        "loss=hinge,seed=1,g.lr=0.000123,optimizer@optimizer.d=sgd_momentum"
    )
    clash = ["optimizer.g.lr=0.1", "sched.g.lr=0.2"]
    assert run_name(clash, {"optimizer.g.lr", "sched.g.lr"}, "x") == (
        "optimizer.g.lr=0.1,sched.g.lr=0.2"
    )
    # Outside a sweep (or where nothing varies): the experiment and what the user chose, less
    # the plumbing (trainer flags, ckpt_path) that a resume adds or changes.
    single = "ring_mlp loss=hinge seed=1 g.lr=0.000123 iterations=1500 "
    single += "optimizer@optimizer.d=sgd_momentum"
    assert run_name(job, None, "ring_mlp") == single
    assert run_name(job, {"data"}, "ring_mlp") == single
    assert run_name([], None, "gan") == "gan"


def _wandb_run(run_dir) -> tuple[Any, dict, list[dict]]:
    """(run record, summary, history) of each offline W&B run under ``run_dir``, oldest first."""
    from wandb.proto import wandb_internal_pb2

    found = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        history, summary = read_wandb_run(path)
        for data in _wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "run":
                found.append((record.run, summary, history))
                break
    return found


def test_wandb_runs_carry_the_study_and_keep_their_name_on_resume(tmp_path):
    """A sweep's W&B runs: one group, short names (what varies), the top-level tags, the best
    val/primary and its iteration in the summary; a resume keeps the name."""
    from tests.helpers import run_cli
    from tests.test_sweeps import TINY

    sweep = tmp_path / "study_losses_demo"
    common = [*TINY, "logger=wandb", "tags=[pilot,ring]", f"hydra.sweep.dir={sweep}"]
    run_cli("-m", *common, "loss=minimax,hinge", "seed=3", "eval.every_n_iterations=2")
    for job, loss in ((0, "minimax"), (1, "hinge")):
        [(run, summary, history)] = _wandb_run(sweep / str(job))
        assert run.run_group == "study_losses_demo"
        assert run.display_name == f"loss={loss}"  # not seed (fixed), not trainer flags
        assert run.tags[:2] == ["pilot", "ring"] and "loss:" + loss in run.tags
        # Lightning logs the step (here the GAN iteration) as trainer/global_step.
        values = [
            (json.loads(row["val/primary"]), json.loads(row["trainer/global_step"]))
            for row in history
            if "val/primary" in row
        ]
        assert [iteration for _, iteration in values] == [2, 4, 6], history
        best_value, best_iteration = min(values)  # ties: the first reaching it
        assert summary["best/val/primary"] == pytest.approx(best_value)
        assert summary["best/iteration"] == best_iteration
        best = read_done(sweep / str(job)).best
        assert best == {
            "metric": "val/primary",
            "value": summary["best/val/primary"],
            "iteration": best_iteration,
        }
    # Re-launched alone, loss=minimax varies nothing: the name is still the one it started with.
    run_cli("-m", *common, "loss=minimax", "seed=3", "ckpt_path=last", "train.iterations=8")
    runs = _wandb_run(sweep / "0")
    assert len(runs) == 2 and runs[0][0].run_id == runs[1][0].run_id
    assert [run.display_name for run, _, _ in runs] == ["loss=minimax"] * 2


def test_tensorboard_run_carries_tags_and_hparams(make_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = make_config(*TOY, "logger=tensorboard", "tags=[pilot,ring]")
    train(cfg)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    text = events.Tensors("tags/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text == "pilot, ring"  # outside a Hydra app: no study tags (loss:..., data:...)
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {k: v.string_value for k, v in start.session_start_info.hparams.items()}
    assert hparams["name"] == "ring_mlp" and hparams["tags"] == "pilot,ring"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metrics = [m.name.tag for m in experiment.experiment.metric_infos]
    assert metrics == ["val/primary", "best/val/primary"]
