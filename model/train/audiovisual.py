"""The audiovisual pretraining model: image and audio encoders trained with one of the losses.

A batch holds N co-located pairs: images (N, 3, S, S) and audio chunks (M, 1, 128, 128) with
``counts`` (chunks per recording). The image encoder gives z_img (N, D); the audio encoder gives
one embedding per chunk, averaged per recording into z_audio (N, D). Under data parallel
training both are all-gathered with gradients before the loss, so every device sees the
negatives of every device (model/nn/gather.py).

Optimisation: ``optimizer`` ``adamw`` (decoupled weight decay) or ``adam`` (``weight_decay`` as
torch's L2 term; 0 for the reference), ``schedule`` ``cosine`` (decay to 0 over ``epochs``) or
``constant`` (the reference's). ``head_init`` ``reference`` draws each encoder's ``fc`` weight as
the reference initialised its 1x1-conv head (``nn.init.kaiming_normal_``, fan out, ReLU gain: std
sqrt(2 / embed_dim)) instead of torch's Linear default (uniform, bound 1 / sqrt(features)).
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch

from model.nn.encoders import AudioEncoder, EncoderSpec, build_encoder, conv_head_init_
from model.nn.gather import all_gather_with_grad
from model.nn.losses import build_loss


class AudioVisualModel(L.LightningModule):
    """LightningModule for image/audio contrastive pretraining."""

    def __init__(self, image_spec: dict[str, Any], audio_spec: dict[str, Any], loss: str = "batch_all_triplet",
                 loss_kwargs: dict[str, Any] | None = None, lr: float = 1e-3, weight_decay: float = 1e-4,
                 epochs: int = 10, channels_last: bool = True, optimizer: str = "adamw", schedule: str = "cosine",
                 head_init: str = "ours") -> None:
        super().__init__()
        if optimizer not in ("adamw", "adam") or schedule not in ("cosine", "constant") \
                or head_init not in ("ours", "reference"):
            raise ValueError(f"optimizer adamw or adam, schedule cosine or constant, head_init ours or reference; "
                             f"got {optimizer!r}, {schedule!r}, {head_init!r}")
        self.save_hyperparameters()
        self.image_encoder = build_encoder(EncoderSpec.from_dict(image_spec))
        self.audio_encoder = AudioEncoder(EncoderSpec.from_dict(audio_spec))
        if head_init == "reference":
            conv_head_init_(self.image_encoder)
            conv_head_init_(self.audio_encoder)
        self.loss_fn = build_loss(loss, **(loss_kwargs or {}))
        if channels_last:
            self.image_encoder.to(memory_format=torch.channels_last)
            self.audio_encoder.to(memory_format=torch.channels_last)

    @property
    def distance(self) -> str:
        return self.loss_fn.distance

    def embed(self, images: torch.Tensor, chunks: torch.Tensor, counts) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_img (N, D), z_audio (N, D)) for a batch; chunk embeddings averaged per recording."""
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
            chunks = chunks.contiguous(memory_format=torch.channels_last)
        z_img = self.image_encoder(images)
        z_audio = self.audio_encoder.embed_recordings(chunks, counts)
        return z_img, z_audio

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        z_img, z_audio = self.embed(batch["image"], batch["audio"], batch["counts"])
        z_img, z_audio = all_gather_with_grad(z_img.float()), all_gather_with_grad(z_audio.float())
        loss = self.loss_fn(z_img, z_audio)
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=stage == "train", on_epoch=True,
                 batch_size=len(batch["image"]), sync_dist=stage != "train")
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self):
        hp = self.hparams
        kind = torch.optim.Adam if hp.get("optimizer", "adamw") == "adam" else torch.optim.AdamW
        opt = kind(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.get("schedule", "cosine") == "constant":
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, hp.epochs))
        return {"optimizer": opt, "lr_scheduler": sched}
