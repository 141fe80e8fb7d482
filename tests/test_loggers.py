"""Loggers write what dashboards read: W&B offline summary, TensorBoard scalars and images."""

from __future__ import annotations

import json

from hydra import compose, initialize_config_dir
from omegaconf import read_write

from gan_lab.config import CONF_DIR
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
