"""``python -m model.finetune classify|segment``: fine-tune a pretrained image encoder on a labelled set.

``classify --data DIR --init INIT --epochs N --out RUN``: scene classification on a
folder-per-class dataset (UC Merced, AID, NWPU-RESISC45: ``DIR/<class>/*.{tif,jpg,png}``); a
stratified train/test split drawn with ``--split-seed`` (``--test-ratio`` of each class in test);
the ResNet backbone plus a linear head (``--freeze``: the head alone). Writes ``RUN/metrics.json``
(accuracy, per-class accuracy, confusion), ``RUN/confusion.png`` and ``RUN/logs/``.

``segment --data DIR --init INIT --epochs N --out RUN``: DeepLabV3+ land-cover segmentation on the
DeepGlobe Land Cover layout (``train/{id}_sat.jpg`` + ``{id}_mask.png``, or ``training_data/`` +
``test_data/`` with ``images/`` and ``masks/``); random ``--crop-size`` crops for training, a
sliding window over whole tiles for testing. Writes ``RUN/metrics.json`` (overall accuracy, mIoU
and per-class IoU, "unknown" excluded), ``RUN/logs/`` and ``RUN/bundle`` (the fine-tuned image
encoder with the ``landcover`` head; an init bundle's audio encoder comes along).

``--init`` is ``random``, a bundle folder, a run folder holding ``bundle/`` (model.train.pretrain,
model.train.baselines), or a torchvision-format ``.pth``/``.safetensors`` weights file (see model/nn/init.py).
``metrics.json`` records task, dataset (``--name``, default the data folder's name), init label
(``--label``) and seed, for ``python -m model.evaluate report``, and what the run did
(:func:`model.train.run_record.run_record`: epochs budget and run, steps, threads, ``truncated``;
the same record with the seconds goes into ``RUN/training.json``).
The budget is ``--epochs``; ``--max-minutes`` is only a safety stop that marks the run truncated;
the run is seeded and deterministic with ``--threads`` intra-op threads (:mod:`model.train.determinism`).
"""
from __future__ import annotations

from model.train.threads import prepare_process

prepare_process()  # before anything imports torch: OpenMP threads wait passively (model/train/threads.py)

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from model.core.cli import fail, run_cli

DEFAULT_SEGMENT_GSD = 0.5  # metres per pixel of DeepGlobe Land Cover tiles


GENERIC_FOLDER_NAMES = {"images", "image", "data", "train", "dataset"}


def _trainer(args: argparse.Namespace, out: Path):
    """One device, no validation and no checkpoints; logs in ``out/logs``."""
    from model.train.trainer import build_trainer

    return build_trainer(out, epochs=args.epochs, accelerator=args.accelerator, precision=args.precision,
                         validate=False, max_minutes=args.max_minutes)


def _dataset_name(args: argparse.Namespace) -> str:
    """``--name``, else the data folder's name (its parent's for generic names such as UC Merced's
    ``UCMerced_LandUse/Images``)."""
    if args.name:
        return args.name
    folder = Path(args.data).resolve()
    return folder.parent.name if folder.name.lower() in GENERIC_FOLDER_NAMES else folder.name


def _common_record(args: argparse.Namespace, init, started: float) -> dict[str, Any]:
    return {"dataset": _dataset_name(args), "init": init.label, "init_source": init.source,
            "init_kind": init.kind, "encoder": init.spec.arch, "seed": args.seed, "split_seed": args.split_seed,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "data": str(Path(args.data).resolve()),
            "seconds": round(time.time() - started, 1)}


def classify(args: argparse.Namespace) -> int:
    """Train and test a scene classifier; write metrics.json and confusion.png into ``--out``."""
    from model.train.classify import SceneClassifier, SceneDataModule, accuracy_scores, plot_confusion
    from model.data.folder_datasets import scan_class_folders, stratified_split
    from model.nn.init import resolve_init
    from model.evaluation.report import write_run_metrics
    from model.train.determinism import make_deterministic
    from model.train.run_record import run_record, write_training_record

    started = time.time()
    init = resolve_init(args.init, args.arch, args.label)
    data = scan_class_folders(args.data)
    settings = classify_settings(args, data)
    if args.protocol == "reference":
        from model.train.reference_protocol import even_odd_split

        train_idx, test_idx = even_odd_split(len(data))
    else:
        train_idx, test_idx = stratified_split(data.labels, args.test_ratio, args.split_seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    determinism = make_deterministic(args.seed, args.threads)
    model = SceneClassifier(_classifier(init, len(data.classes), args.protocol), lr=settings["lr"],
                            weight_decay=settings["weight_decay"], epochs=args.epochs, freeze=args.freeze,
                            schedule=settings["schedule"])
    # the init's normalisation (ImageNet's unless a bundle records another) at the image size in px
    image_input = replace(init.image_input, tile_size=settings["image_size"])
    dm = SceneDataModule(data, train_idx, test_idx, image_input=image_input, batch_size=settings["batch_size"],
                         num_workers=args.num_workers, seed=args.seed, augment=settings["augment"])
    trainer = _trainer(args, out)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    accuracy, per_class = accuracy_scores(model.confusion)
    plot_confusion(model.confusion, data.classes, out / "confusion.png",
                   title=f"{_dataset_name(args)}, init {init.label}: accuracy {100 * accuracy:.1f} %")
    run = run_record(trainer, args.epochs, determinism)
    record = {"task": "classify", **_common_record(args, init, started), "scores": {"accuracy": accuracy},
              "accuracy": accuracy, "per_class_accuracy": dict(zip(data.classes, per_class)),
              "classes": data.classes, "confusion": model.confusion.tolist(), "n_train": len(train_idx),
              "n_test": len(test_idx), "test_ratio": args.test_ratio if args.protocol == "ours" else 0.5,
              "freeze": args.freeze, "protocol": args.protocol, **settings, **data.left_out.record(), **run}
    write_run_metrics(out, record)
    write_training_record(out, run, time.time() - started)
    if data.left_out:
        print(data.left_out.summary("images"))
    print(f"{record['dataset']} / {init.label}: accuracy {100 * accuracy:.1f} % on {len(test_idx)} test images "
          f"-> {out / 'metrics.json'}")
    return 0


def classify_settings(args: argparse.Namespace, data) -> dict[str, Any]:
    """The classification run's settings: each flag given, else the protocol's value (ours: the
    parser's defaults; reference: :mod:`model.train.reference_protocol`, image size the images'
    native side and the reference's batch size for it)."""
    ours = {"lr": 5e-4, "weight_decay": 1e-4, "schedule": "cosine", "augment": True, "image_size": 192,
            "batch_size": 32}
    if args.protocol == "reference":
        from model.train.reference_protocol import CLASSIFY, batch_size_for, native_side

        side = args.image_size or native_side(data.paths)
        ours = {**{k: v for k, v in CLASSIFY.items() if k != "epochs"}, "image_size": side,
                "batch_size": batch_size_for(side)}
    return {**ours, **_given(args, "lr", "weight_decay", "image_size", "batch_size")}


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options among ``names`` the user gave (not None): they override a protocol's values."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _classifier(init, num_classes: int, protocol: str):
    """Ours: the backbone with ``fc`` to K classes. Reference: a bundle's encoder with its own
    projection and distance transform, then a linear layer (``ProjectionClassifier``); a backbone
    without a projection (random, a weights file) is ours, as the reference's ``from_resnet``."""
    from model.core.distance import COSINE
    from model.train.classify import ProjectionClassifier

    if protocol == "reference" and init.bundle is not None:
        return ProjectionClassifier(init.projection_encoder(), num_classes,
                                    normalise=init.bundle.distance == COSINE)
    return init.encoder(embed_dim=num_classes)


def segment_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The segmentation run's settings: each flag given, else the protocol's value (ours: random
    crops, a half-overlapping sliding window of the crop size; reference:
    :data:`model.train.reference_protocol.SEGMENT`, grid patches and whole test tiles)."""
    from model.train.reference_protocol import SEGMENT

    ours = {"lr": 5e-4, "weight_decay": 1e-4, "schedule": "cosine", "batch_size": 8, "crop_size": 256,
            "patch_stride": None, "decoder": {"decoder_channels": 256}}
    base = {**SEGMENT, "decoder": dict(SEGMENT["decoder"])} if args.protocol == "reference" else ours
    settings = {**base, **_given(args, "lr", "weight_decay", "batch_size", "crop_size", "patch_stride")}
    if args.decoder_channels is not None:
        settings["decoder"]["decoder_channels"] = args.decoder_channels
    whole = args.protocol == "reference" and args.window is None  # reference: each test tile in one window
    settings["window"] = None if whole else (args.window or settings["crop_size"])
    settings["stride"] = None if whole else (args.stride or max(1, settings["window"] // 2))
    return settings


def _segment_split(args: argparse.Namespace, tiles: dict[str, list]) -> tuple[dict[str, list], str]:
    """(train/test tiles, how they were split): the layout's own test split, the reference's
    ``valid_ids.txt`` in the data folder (reference protocol), or a seeded random split."""
    from model.data.folder_datasets import split_tiles
    from model.train.reference_protocol import SPLIT_FILE, read_split_ids

    split_file = Path(args.data) / SPLIT_FILE
    if args.protocol == "reference" and split_file.is_file():
        ids = read_split_ids(split_file)
        every = tiles["train"] + tiles["test"]
        test = [t for t in every if str(int(t.tile_id)) in ids] if all(t.tile_id.isdigit() for t in every) else []
        if not test or len(test) == len(every):
            fail(f"{split_file}: its ids leave {len(test)} of {len(every)} tiles for testing")
        return {"train": [t for t in every if t not in test], "test": test}, SPLIT_FILE
    if tiles["test"]:
        return tiles, "layout"
    if args.protocol == "reference":
        print(f"note: no {SPLIT_FILE} in {args.data}: a seeded random split is used instead of the reference's")
    return split_tiles(tiles["train"], args.test_ratio, args.split_seed), f"random (--split-seed {args.split_seed})"


def _check_segment_args(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    for name in ("crop_size", "window"):
        value = settings[name]
        if value is not None and (value < 32 or value % 32):
            fail(f"--{name.replace('_', '-')} must be a multiple of 32 px, got {value}")
    for name in ("stride", "patch_stride"):
        value = getattr(args, name)
        if value is not None and value < 1:
            fail(f"--{name.replace('_', '-')} must be positive, got {value}")


def segment(args: argparse.Namespace) -> int:
    """Train and test a DeepLabV3+ land-cover segmenter; write metrics.json and a bundle into ``--out``."""
    import model.bundle as bundle_mod
    from model.data.bad_items import LeftOut
    from model.data.folder_datasets import DEEPGLOBE_CLASSES, scan_deepglobe
    from model.nn.init import resolve_init
    from model.nn.landcover import build_segmenter
    from model.evaluation.report import write_run_metrics
    from model.train.determinism import make_deterministic
    from model.train.run_record import run_record, write_training_record
    from model.train.segment import (DeepGlobeDataModule, LandCoverSegmenter, reference_scores, segmentation_bundle,
                                     segmentation_scores)

    started = time.time()
    settings = segment_settings(args)
    _check_segment_args(args, settings)
    init = resolve_init(args.init, args.arch, args.label)
    spec = init.spec
    left_out = LeftOut()
    tiles = scan_deepglobe(args.data, left_out)
    tiles, settings["split"] = _segment_split(args, tiles)
    window, stride = settings["window"], settings["stride"]
    decoder = settings["decoder"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    determinism = make_deterministic(args.seed, args.threads)
    segmenter = build_segmenter(spec, len(DEEPGLOBE_CLASSES), **decoder)  # any ResNet width (model.nn.landcover)
    if init.backbone is not None:
        segmenter.encoder.load_state_dict(init.backbone, strict=True)
    model = LandCoverSegmenter(segmenter, len(DEEPGLOBE_CLASSES), lr=settings["lr"],
                               weight_decay=settings["weight_decay"], epochs=args.epochs, window=window, stride=stride,
                               freeze_encoder=args.freeze_encoder, schedule=settings["schedule"])
    dm = DeepGlobeDataModule(tiles["train"], tiles["test"], crop_size=settings["crop_size"],
                             crops_per_tile=args.crops_per_tile, batch_size=settings["batch_size"],
                             num_workers=args.num_workers, seed=args.seed, image_input=init.image_input,
                             patch_stride=settings["patch_stride"])
    trainer = _trainer(args, out)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    scores = segmentation_scores(model.confusion, DEEPGLOBE_CLASSES)
    if args.protocol == "reference":  # the reference's OA (mean of tiles) and mIoU (all six classes)
        scores.update(reference_scores(model.confusion, model.tile_accuracy))
    headline = ({"overall_accuracy": scores["overall_accuracy_mean_of_tiles"], "miou": scores["miou_all_classes"]}
                if args.protocol == "reference" else
                {"overall_accuracy": scores["overall_accuracy"], "miou": scores["miou"]})
    record = {"task": "segment", **_common_record(args, init, started),
              "scores": headline, **scores,
              "classes": list(DEEPGLOBE_CLASSES), "confusion": model.confusion.tolist(),
              "n_train": len(tiles["train"]), "n_test": len(tiles["test"]), "gsd": args.gsd,
              "freeze_encoder": args.freeze_encoder, "protocol": args.protocol, **settings, **left_out.record()}
    run = run_record(trainer, args.epochs, determinism)
    record.update(run)
    provenance = {"trained_by": "geoaudio model.finetune segment", "init": init.label, "init_source": init.source,
                  "data": record["data"], **run,
                  "metrics": {"overall_accuracy": scores["overall_accuracy"], "miou": scores["miou"]}}
    meta, tensors = segmentation_bundle(segmenter.cpu(), init, encoder=spec, tile_size=settings["crop_size"],
                                        gsd=args.gsd, decoder=decoder, provenance=provenance,
                                        head_extra={"metrics": provenance["metrics"]})
    bundle_mod.save(out / "bundle", meta, tensors, overwrite=(out / "bundle").exists())
    write_run_metrics(out, record)
    write_training_record(out, run, time.time() - started)
    if left_out:
        print(left_out.summary("tiles"))
    print(f"{record['dataset']} / {init.label}: OA {100 * scores['overall_accuracy']:.1f} %, "
          f"mIoU {100 * scores['miou']:.1f} % -> {out / 'metrics.json'}, {out / 'bundle'}")
    return 0


def _add_common(p: argparse.ArgumentParser, lr: float | None, batch_size: int | None) -> None:
    """The options of both tasks; ``lr`` and ``batch_size`` None leave them to the protocol
    (classify: :func:`classify_settings`)."""
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--init", required=True,
                   help="'random', a bundle folder, a run folder with bundle/, or a .pth/.safetensors file")
    p.add_argument("--epochs", type=int, required=True, help="the training budget in epochs")
    p.add_argument("--out", required=True, help="run folder (metrics.json, logs/ ...)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split (default 0, fixed)")
    p.add_argument("--test-ratio", type=float, default=0.2,
                   help="fraction held out for testing (default 0.2; segment: only without test_data/)")
    p.add_argument("--batch-size", type=int, default=batch_size,
                   help=f"default {batch_size if batch_size is not None else '32 (reference: 48, 8 for 600 px images)'}")
    p.add_argument("--lr", type=float, default=lr,
                   help=f"learning rate (default {lr if lr is not None else '5e-4, AdamW with cosine decay; reference: 1e-3 Adam, constant'})")
    p.add_argument("--weight-decay", type=float, default=1e-4 if lr is not None else None,
                   help="AdamW weight decay (default 1e-4; reference: none)")
    p.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet34", "resnet50"],
                   help="architecture for --init random (default resnet18)")
    p.add_argument("--name", help="dataset name in metrics.json and reports (default: the data folder's name)")
    p.add_argument("--label", help="initialisation label in metrics.json and reports (default: from --init)")
    p.add_argument("--num-workers", type=int, default=2, help="data loader processes (default 2)")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda"])
    p.add_argument("--precision", default="auto", help="auto (default), 32-true, bf16-mixed, 16-mixed")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default 0: torch's default); recorded, since results depend on it")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="safety stop, not a budget: a run cut short by it is recorded as truncated")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", required=True)
    c = sub.add_parser("classify", help="scene classification on class folders (UC Merced, AID, RESISC45)",
                       description="Fine-tune backbone + linear head on DIR/<class>/*.{tif,jpg,png}; writes "
                                   "RUN/metrics.json, RUN/confusion.png and RUN/logs/.")
    _add_common(c, lr=None, batch_size=None)
    c.add_argument("--image-size", type=int, default=None,
                   help="input side in px (default 192; reference: the images' most common side)")
    c.add_argument("--protocol", choices=["ours", "reference"], default="ours",
                   help="ours (default): stratified split, AdamW 5e-4 with cosine decay, augmentation, backbone + "
                        "linear head at 192 px, batch 32; reference: the SoundingEarth code's (docs/fidelity.md): "
                        "even/odd 50/50 split, Adam 1e-3 constant, no augmentation, the bundle's projection kept "
                        "plus a linear layer, native image size, batch 48 (8 for AID's 600 px); use --epochs 5. "
                        "Flags given explicitly override either")
    c.add_argument("--freeze", action="store_true", help="train the linear head only (linear probe)")
    c.set_defaults(func=classify)
    s = sub.add_parser("segment", help="DeepLabV3+ land cover on the DeepGlobe layout",
                       description="Fine-tune DeepLabV3+ on DeepGlobe Land Cover tiles (train/ or "
                                   "training_data/ + test_data/); writes RUN/metrics.json (OA, mIoU, "
                                   "per-class IoU), RUN/logs/ and RUN/bundle with the landcover head.")
    _add_common(s, lr=None, batch_size=None)
    s.add_argument("--protocol", choices=["ours", "reference"], default="ours",
                   help="ours (default): random crops with dihedral augmentation, AdamW 5e-4 cosine, batch 8, a "
                        "sliding window at test time; reference: the SoundingEarth code's (docs/fidelity.md): every "
                        "512 px patch at stride 347, no augmentation, batch 16, Adam 1e-3 constant, ASPP 6/12/18 "
                        "non-separable, whole tiles at test time, the split of DATA/valid_ids.txt, OA as the mean of "
                        "per-tile accuracies and mIoU over all six classes; use --epochs 5. Flags given override either")
    s.add_argument("--crop-size", type=int, default=None,
                   help="training crop (patch) side in px, multiple of 32 (default 256; reference 512)")
    s.add_argument("--patch-stride", type=int, default=None,
                   help="train on every crop-size patch of a grid with this step in px instead of random crops "
                        "(reference: 347)")
    s.add_argument("--crops-per-tile", type=int, default=4, help="random crops per tile and epoch (default 4)")
    s.add_argument("--window", type=int, help="sliding-window side in px for testing (default: --crop-size)")
    s.add_argument("--stride", type=int, help="sliding-window step in px (default: half the window)")
    s.add_argument("--decoder-channels", type=int, default=None, help="DeepLabV3+ decoder width (default 256)")
    s.add_argument("--freeze-encoder", action="store_true",
                   help="train the decoder and head only; the bundle keeps the init's image encoder, so its "
                        "land-cover head merges into the init bundle (python -m model.bundle merge)")
    s.add_argument("--gsd", type=float, default=DEFAULT_SEGMENT_GSD,
                   help=f"metres per pixel of the tiles, recorded in the head (default {DEFAULT_SEGMENT_GSD})")
    s.set_defaults(func=segment)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.epochs < 1:
        fail(f"--epochs must be at least 1, got {args.epochs}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
