"""The one Trainer builder: precision, batch limits, loggers, checkpoints and the validation switch."""
from __future__ import annotations

from pathlib import Path

from model.train.trainer import (
    batch_limit, best_checkpoint, build_trainer, cpu_supports_bf16, last_checkpoints, resolve_precision,
)


def test_precision_auto_on_cpu_follows_the_cpu_and_explicit_values_pass_through():
    assert resolve_precision("auto", "cpu") == ("bf16-mixed" if cpu_supports_bf16() else "32-true")
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"


def test_batch_limit_reads_large_values_as_a_number_of_batches():
    assert batch_limit(1.0) == 1.0 and isinstance(batch_limit(1.0), float)
    assert batch_limit(0.25) == 0.25
    assert batch_limit(5.0) == 5 and isinstance(batch_limit(5.0), int)


def test_fine_tuning_trainer_has_no_validation_and_no_checkpoints(tmp_path):
    trainer = build_trainer(tmp_path, epochs=3, accelerator="cpu", precision="32-true", validate=False,
                            max_minutes=2.0, limit_train_batches=4)
    assert trainer.max_epochs == 3 and trainer.limit_val_batches == 0 and trainer.num_sanity_val_steps == 0
    assert trainer.checkpoint_callback is None and trainer.limit_train_batches == 4
    assert {Path(logger.root_dir).parent for logger in trainer.loggers} == {tmp_path / "logs"}
    assert sorted(Path(logger.root_dir).name for logger in trainer.loggers) == ["csv", "tensorboard"]


def test_pretraining_trainer_keeps_every_nth_epoch_and_the_best(tmp_path):
    best = best_checkpoint(tmp_path, monitor="val_loss")
    trainer = build_trainer(tmp_path, epochs=2, accelerator="cpu", precision="32-true",
                            callbacks=[last_checkpoints(tmp_path, every=5), best])
    every, kept = trainer.checkpoint_callbacks
    assert kept is best and best.monitor == "val_loss" and best.save_top_k == 1
    assert every.save_top_k == -1 and every.save_last and Path(every.dirpath) == tmp_path / "checkpoints"
    assert every._every_n_epochs == 5
    assert trainer.limit_val_batches == 1.0
    only_last = build_trainer(tmp_path, max_steps=10, accelerator="cpu", precision="32-true",
                              callbacks=[last_checkpoints(tmp_path)])
    last = only_last.checkpoint_callback
    assert only_last.max_steps == 10 and last.save_top_k == 1 and last.filename == "last" and not last.save_last


def test_a_time_limit_is_a_safety_stop_not_a_budget(tmp_path):
    from model.train.safety_stop import SafetyStop, was_truncated

    trainer = build_trainer(tmp_path, epochs=3, accelerator="cpu", precision="32-true", max_minutes=2.0)
    [stop] = [c for c in trainer.callbacks if isinstance(c, SafetyStop)]
    assert stop.minutes == 2.0 and not was_truncated(trainer) and trainer.max_epochs == 3
    unlimited = build_trainer(tmp_path, epochs=3, accelerator="cpu", precision="32-true")
    assert not [c for c in unlimited.callbacks if isinstance(c, SafetyStop)]
