"""Tests of the dataset readers (model.data) on a small SoundingEarth-format folder."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from model.bundle.audio import AudioConfig
from model.bundle.image_input import IMAGENET_MEAN, IMAGENET_STD
from model.core.cli import run_cli
from model.data import (
    DatasetError,
    SoundingEarthDataset,
    collate,
    prepare_images,
    split_of_key,
    write_split_file,
)
from model.data.metadata import read_metadata
from model.data.prepare import main as prepare_main
from model.synth.soundscape import SOURCES
from model.synth.pairs import write_pairs

N_PAIRS = 8  # model.synth keys are 100000 + i: last digits 0..7 reach train, val and test
TILE = 128
SIZE = 32  # output side in tests; the eval region of a 128 px tile is 48 px


@pytest.fixture(scope="session")
def pairs(tmp_path_factory) -> Path:
    """Eight pairs from the project's own synthetic world generator."""
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs", N_PAIRS, size=TILE, seed=0,
                       duration=(3.0, 4.0), progress=False)


@pytest.fixture
def pairs_copy(pairs, tmp_path) -> Path:
    """A private copy of the folder, for tests that change files or write caches into it."""
    return Path(shutil.copytree(pairs, tmp_path / "pairs", ignore=shutil.ignore_patterns(".cache")))


def dataset(root: Path, **kwargs) -> SoundingEarthDataset:
    options = dict(split="all", image_size=SIZE, image_cache=False, random_audio_chunk=False)
    options.update(kwargs)
    return SoundingEarthDataset(root, **options)


def metadata_keys(root: Path) -> list[int]:
    return pd.read_csv(root / "metadata.csv")["key"].astype(int).tolist()


# ---- splits -----------------------------------------------------------------------------------

def test_splits_partition_all_keys_and_every_sample_loads(pairs):
    parts = {s: SoundingEarthDataset(pairs, split=s, image_size=SIZE, image_cache=False).keys
             for s in ("train", "val", "test")}
    together = sorted(k for keys in parts.values() for k in keys)
    assert together == sorted(metadata_keys(pairs))
    for split, keys in parts.items():
        assert all(split_of_key(k) == split for k in keys)
    ds = dataset(pairs)
    for i in range(len(ds)):
        sample = ds[i]
        assert torch.isfinite(sample["image"]).all() and torch.isfinite(sample["audio"]).all()


def test_split_by_key_mod_10():
    assert [split_of_key(k) for k in range(10)] == [
        "train", "train", "test", "train", "train", "test", "train", "val", "train", "train"]
    assert split_of_key(1237) == "val" and split_of_key(40) == "train" and split_of_key(15) == "test"


def test_split_files(pairs, tmp_path):
    keys = metadata_keys(pairs)
    files = {"train": write_split_file(keys[:3], tmp_path / "train.csv"),
             "test": write_split_file(keys[3:5] + [999_999], tmp_path / "test.csv")}
    assert dataset(pairs, split="train", split_files=files).keys == keys[:3]
    assert dataset(pairs, split="test", split_files=files).keys == keys[3:5]  # unknown key left out
    with pytest.raises(DatasetError, match="no split file for split 'val'"):
        dataset(pairs, split="val", split_files=files)
    pd.DataFrame({"id": keys}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DatasetError, match=r"bad\.csv: split file has no 'key' column"):
        dataset(pairs, split="train", split_files={"train": tmp_path / "bad.csv"})


# ---- samples ----------------------------------------------------------------------------------

def test_sample_shapes_dtypes_and_values(pairs):
    meta = pd.read_csv(pairs / "metadata.csv").set_index("key")
    ds = dataset(pairs)
    sample = ds[0]
    key = sample["key"]
    assert isinstance(key, int) and key == ds.keys[0]
    assert sample["image"].shape == (3, SIZE, SIZE) and sample["image"].dtype == torch.float32
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    unit = sample["image"] * std + mean  # undo the normalisation: back in [0, 1]
    assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5 and unit.std() > 0.05
    audio = sample["audio"]
    assert audio.dtype == torch.float32 and audio.shape[1:] == (1, 128, 128) and audio.shape[0] >= 1
    frames = ds.logmel(key).shape[1]
    assert audio.shape[0] == max(1, frames // 128)  # every whole chunk when not random
    assert sample["location"].tolist() == [meta.loc[key, "longitude"], meta.loc[key, "latitude"]]
    assert sample["dominant"] == meta.loc[key, "dominant"] and sample["dominant"] in SOURCES


def test_train_split_draws_one_random_chunk(pairs):
    ds = SoundingEarthDataset(pairs, split="train", image_size=SIZE, image_cache=False)
    assert ds.random_audio_chunk
    chunks = [ds[0]["audio"] for _ in range(6)]
    assert all(c.shape == (1, 1, 128, 128) for c in chunks)
    assert any(not torch.equal(chunks[0], c) for c in chunks[1:])  # different start frames


def test_spectrogram_and_raw_audio_sources_agree(pairs, tmp_path):
    spec = dataset(pairs)
    raw = dataset(pairs, audio_source="audio", cache_dir=tmp_path / "logmel")
    for i in range(2):
        a, b = spec[i]["audio"], raw[i]["audio"]
        assert a.shape == b.shape and a.shape[1:] == (1, 128, 128)
        # the JPEG was made from the waveform before MP3 coding: 8-bit and codec differences only
        assert (a - b).abs().mean() < 0.02


def test_raw_audio_cache_is_reused(pairs, tmp_path):
    cache = tmp_path / "logmel"
    first = dataset(pairs, audio_source="audio", cache_dir=cache)
    chunks = [first[i]["audio"] for i in range(len(first))]
    files = sorted(cache.glob("*.npy"))
    assert first.logmel_cache.decoded == len(first) == len(files)
    stamps = {f: f.stat().st_mtime_ns for f in files}
    second = dataset(pairs, audio_source="audio", cache_dir=cache)
    again = [second[i]["audio"] for i in range(len(second))]
    assert second.logmel_cache.decoded == 0  # nothing decoded: every spectrogram came from the cache
    assert {f: f.stat().st_mtime_ns for f in sorted(cache.glob("*.npy"))} == stamps
    assert all(torch.equal(a, b) for a, b in zip(chunks, again))
    with pytest.raises(DatasetError, match="another audio config"):
        dataset(pairs, audio_source="audio", cache_dir=cache, audio_config=AudioConfig(hop_length=256))[0]


def test_default_logmel_cache_lives_under_root(pairs_copy):
    ds = dataset(pairs_copy, audio_source="audio")
    ds[0]
    assert ds.logmel_cache.folder.parent == pairs_copy / ".cache"
    assert len(list(ds.logmel_cache.folder.glob("*.npy"))) == 1


def test_augment_varies_but_keeps_shape(pairs):
    ds = dataset(pairs, augment=True)
    a, b = ds[0]["image"], ds[0]["image"]
    assert a.shape == b.shape == (3, SIZE, SIZE)
    assert not torch.allclose(a, b)
    again = dataset(pairs, augment=True)  # same seed, same draws
    assert torch.equal(again[0]["image"], a)
    plain = dataset(pairs)
    assert torch.equal(plain[0]["image"], plain[0]["image"])  # evaluation is deterministic


def test_collate_concatenates_chunks_with_counts(pairs):
    ds = dataset(pairs)
    samples = [ds[i] for i in range(3)]
    batch = collate(samples)
    assert batch["image"].shape == (3, 3, SIZE, SIZE)
    assert batch["counts"] == [s["audio"].shape[0] for s in samples]
    assert batch["audio"].shape[0] == sum(batch["counts"])
    for part, s in zip(torch.split(batch["audio"], batch["counts"]), samples):
        assert torch.equal(part, s["audio"])
    assert batch["key"].tolist() == ds.keys[:3] and batch["location"].shape == (3, 2)
    assert batch["dominant"] == [s["dominant"] for s in samples]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=SoundingEarthDataset.collate)
    assert sum(len(b["counts"]) for b in loader) == len(ds)


# ---- the prepared image cache -------------------------------------------------------------------

def test_prepared_cache_matches_raw_images(pairs, tmp_path):
    exact = prepare_images(pairs, size=SIZE, crop=0.375, out=tmp_path / "eval", progress=False)
    raw, cached = dataset(pairs), dataset(pairs, image_cache=exact)
    assert cached.image_cache == exact and len(list(exact.glob("*.npy"))) == len(raw)
    for i in range(len(raw)):
        assert torch.allclose(raw[i]["image"], cached[i]["image"], atol=1e-6)
    # a training-style cache (the 0.5 region, resampled once more) serves evaluation within resize
    # error: its mean difference is well below that of a wrong crop (0.4 instead of 0.375: ~0.12)
    wide = prepare_images(pairs, size=48, crop=0.5, out=tmp_path / "train", progress=False)
    from_wide = dataset(pairs, image_cache=wide)
    diff = torch.stack([(raw[i]["image"] - from_wide[i]["image"]).abs().mean() for i in range(len(raw))])
    assert diff.mean() < 0.05, diff.tolist()
    assert dataset(pairs, image_cache=wide, augment=True)[0]["image"].shape == (3, SIZE, SIZE)


def test_prepared_cache_too_small_is_refused(pairs, tmp_path):
    small = prepare_images(pairs, size=SIZE, crop=0.375, out=tmp_path / "eval", progress=False)
    with pytest.raises(DatasetError, match=r"prepared\.json: cache holds the 0\.375 centre crop at 32 px"):
        dataset(pairs, image_cache=small, augment=True)  # augmentation needs the 0.5 region
    with pytest.raises(DatasetError, match="prepared.json"):
        dataset(pairs, image_cache=small, image_size=64)  # not enough pixels
    with pytest.raises(DatasetError, match="no prepared image cache serves the 0.375 centre crop"):
        dataset(pairs, image_cache=True)  # required, but none under ROOT/.cache


def test_prepare_cli_finds_cache_and_reruns_skip(pairs_copy, capsys):
    assert prepare_main([str(pairs_copy), "--size", str(SIZE), "--crop", "0.375"]) == 0
    folder = pairs_copy / ".cache" / f"images-{SIZE}-0.375"
    assert capsys.readouterr().out.strip() == str(folder)
    stamps = {f: f.stat().st_mtime_ns for f in folder.glob("*.npy")}
    assert len(stamps) == N_PAIRS
    os.remove(next(iter(stamps)))
    assert prepare_main([str(pairs_copy), "--size", str(SIZE), "--crop", "0.375", "--workers", "2"]) == 0
    after = {f: f.stat().st_mtime_ns for f in folder.glob("*.npy")}
    assert len(after) == N_PAIRS and sum(after[f] != stamps[f] for f in stamps) == 1  # only the missing one
    assert dataset(pairs_copy, image_cache=None).image_cache == folder  # found without being named
    capsys.readouterr()
    assert run_cli(lambda: prepare_main([str(pairs_copy / "nowhere")])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere: no such dataset folder" in err and err.count("\n") == 1
    meta = pd.read_csv(pairs_copy / "metadata.csv")
    pd.concat([meta, meta.iloc[:1]]).to_csv(pairs_copy / "metadata.csv", index=False)
    assert run_cli(lambda: prepare_main([str(pairs_copy)])) == 2
    assert "metadata.csv: duplicate key" in capsys.readouterr().err


# ---- missing files and errors -----------------------------------------------------------------

def test_keys_missing_files_are_dropped(pairs_copy):
    keys = metadata_keys(pairs_copy)
    (pairs_copy / "images" / f"{keys[0]}.jpg").unlink()
    (pairs_copy / "spectrograms" / f"{keys[1]}.jpg").unlink()
    ds = dataset(pairs_copy)
    assert ds.keys == keys[2:] and ds.dropped == {"no_image": 1, "no_audio": 1, "unreadable": 0}
    assert len(dataset(pairs_copy, audio_source="audio")) == len(keys) - 1  # its mp3 is still there


def test_bad_folders_give_one_line_errors(pairs_copy, tmp_path):
    with pytest.raises(DatasetError, match="nowhere: no such dataset folder"):
        dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"metadata\.csv: missing metadata file"):
        dataset(tmp_path / "empty")
    meta = pd.read_csv(pairs_copy / "metadata.csv")
    meta.rename(columns={"key": "id"}).to_csv(pairs_copy / "metadata.csv", index=False)
    with pytest.raises(DatasetError, match=r"metadata\.csv: no 'key' column"):
        dataset(pairs_copy)
    meta[meta["key"] % 10 != 7].to_csv(pairs_copy / "metadata.csv", index=False)
    with pytest.raises(DatasetError, match="split 'val' has no samples") as error:
        dataset(pairs_copy, split="val")
    assert "\n" not in str(error.value)
    with pytest.raises(DatasetError, match="audio_source must be one of"):
        dataset(pairs_copy, audio_source="video")


def test_a_corrupt_image_is_named_left_out_and_the_rest_goes_on(pairs_copy, tmp_path, caplog):
    keys = metadata_keys(pairs_copy)
    image = pairs_copy / "images" / f"{keys[0]}.jpg"
    good = image.read_bytes()
    image.write_bytes(b"not a jpeg at all")
    ds = dataset(pairs_copy)
    with caplog.at_level("WARNING"):
        sample = ds[0]
    assert sample["key"] == keys[1]  # the next readable sample stands in
    assert [f for f, _ in ds.left_out.items] == [f"key {keys[0]}"]
    assert f"{image.name}: corrupt image" in ds.left_out.items[0][1]
    assert any(image.name in r.getMessage() and "left out" in r.getMessage() for r in caplog.records)

    cache = tmp_path / "cache"
    prepare_images(pairs_copy, size=SIZE, out=cache, progress=False)  # goes on past the bad image
    assert (cache / f"{keys[0]}.bad").read_text().startswith(str(image))
    assert len(list(cache.glob("*.npy"))) == len(keys) - 1
    prepared = dataset(pairs_copy, image_cache=cache)
    assert keys[0] not in prepared.keys and prepared.dropped["unreadable"] == 1
    image.write_bytes(good)  # fixed: a rerun takes it in again
    prepare_images(pairs_copy, size=SIZE, out=cache, progress=False)
    assert not (cache / f"{keys[0]}.bad").exists() and keys[0] in dataset(pairs_copy, image_cache=cache).keys


def test_a_bad_recording_is_marked_in_the_logmel_cache_and_left_out_from_then_on(pairs_copy, tmp_path):
    keys = metadata_keys(pairs_copy)
    sound = pairs_copy / "audio" / f"{keys[1]}.mp3"
    sound.write_bytes(b"\x00" * 64)
    ds = dataset(pairs_copy, audio_source="audio", cache_dir=tmp_path / "logmel")
    assert ds[1]["key"] == keys[2]
    assert sound.name in ds.left_out.items[0][1]
    assert (tmp_path / "logmel" / f"{keys[1]}.bad").is_file()
    again = dataset(pairs_copy, audio_source="audio", cache_dir=tmp_path / "logmel")
    assert keys[1] not in again.keys and again.dropped["unreadable"] == 1


def test_a_bad_cache_folder_is_not_a_bad_item(pairs_copy, tmp_path):
    """A problem of the whole set (a log-mel cache of another config) still stops with one line."""
    (tmp_path / "logmel").mkdir()
    (tmp_path / "logmel" / "config.json").write_text("{}")
    with pytest.raises(DatasetError, match="another audio config"):
        dataset(pairs_copy, audio_source="audio", cache_dir=tmp_path / "logmel")[0]


def test_rows_without_a_valid_place_are_left_out_and_reported(pairs_copy, caplog):
    meta = pd.read_csv(pairs_copy / "metadata.csv").astype({"longitude": object, "latitude": object})
    keys = meta["key"].tolist()
    meta.loc[0, "longitude"] = float("nan")
    meta.loc[1, "latitude"] = "north"
    meta.loc[2, "latitude"] = 91.0
    meta.loc[3, "longitude"] = ""
    meta.to_csv(pairs_copy / "metadata.csv", index=False)
    with caplog.at_level("WARNING"):
        table = read_metadata(pairs_copy)
    assert table["key"].tolist() == keys[4:]
    assert table["longitude"].dtype == float and table["latitude"].dtype == float
    [message] = [r.getMessage() for r in caplog.records if "longitude" in r.getMessage()]
    assert "metadata.csv: 4 rows without a valid longitude/latitude are left out" in message
    meta.loc[:, "latitude"] = "nowhere"
    meta.to_csv(pairs_copy / "metadata.csv", index=False)
    with pytest.raises(DatasetError, match="metadata.csv: no row has a valid longitude and latitude"):
        read_metadata(pairs_copy)


def test_a_split_of_one_pair_is_refused_and_a_last_batch_of_one_dropped(pairs, tmp_path):
    from model.data.datamodule import SoundingEarthDataModule

    assert len(dataset(pairs, split="val")) == 1  # key 100007 of eight
    with pytest.raises(DatasetError, match="split 'val' has 1 pair; .* at least 2"):
        SoundingEarthDataModule(pairs, batch_size=4, num_workers=0).setup()
    thirty = write_pairs(tmp_path / "thirty", 30, size=64, seed=0, duration=(1.0, 1.0), workers=1, progress=False)
    module = SoundingEarthDataModule(thirty, batch_size=2, num_workers=0)
    module.setup()
    assert len(module.val_set) == 3
    assert [len(batch["key"]) for batch in module.val_dataloader()] == [2]  # not [2, 1]: a pair alone is dropped
