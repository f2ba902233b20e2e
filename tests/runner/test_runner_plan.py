"""Object order and ShardedByS3Key split: pure functions, checked over a grid."""

import json

import pytest

from pipealgos.platform.runner import plan
from pipealgos.platform.runner.storage import LocalStore


@pytest.mark.parametrize("objects", [0, 1, 2, 5, 17, 100])
@pytest.mark.parametrize("hosts", [1, 2, 3, 7])
@pytest.mark.parametrize("seed", [None, 0, 42])
@pytest.mark.parametrize("epoch", [0, 3])
def test_every_object_reaches_exactly_one_host(objects, hosts, seed, epoch):
    items = [f"s3://b/k{i}" for i in range(objects)]
    shares = [plan.host_objects(items, h, hosts, sharded=True, seed=seed, epoch=epoch) for h in range(hosts)]
    flat = [o for share in shares for o in share]
    assert sorted(flat) == sorted(items)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    replicated = [plan.host_objects(items, h, hosts, sharded=False, seed=seed, epoch=epoch) for h in range(hosts)]
    assert all(sorted(share) == sorted(items) for share in replicated)
    assert all(share == replicated[0] for share in replicated)  # every host sees the same order


@pytest.mark.parametrize("seed", [0, 1, 2**40, -5])
def test_same_seed_same_order_and_epochs_differ(seed):
    items = list(range(50))
    assert plan.epoch_order(items, seed, 0) == plan.epoch_order(items, seed, 0)
    assert plan.epoch_order(items, seed, 0) != plan.epoch_order(items, seed, 1)
    assert sorted(plan.epoch_order(items, seed, 1)) == items
    assert plan.epoch_order(items, None, 5) == items


def test_shuffle_moves_objects_between_hosts_across_epochs():
    items = list(range(40))
    first = set(plan.host_objects(items, 0, 2, sharded=True, seed=7, epoch=0))
    second = set(plan.host_objects(items, 0, 2, sharded=True, seed=7, epoch=1))
    assert first != second


def test_unsharded_split_is_round_robin_in_key_order():
    assert plan.shard(list("abcdefg"), 1, 3) == ["b", "e"]
    with pytest.raises(ValueError):
        plan.shard([1], 3, 3)


def test_manifest_parsing_and_errors():
    prefix, keys = plan.parse_manifest(json.dumps([{"prefix": "s3://b/p/"}, "matrix_0.pbr", "matrix_1.pbr"]), "m")
    assert prefix == "s3://b/p/" and keys == ["matrix_0.pbr", "matrix_1.pbr"]
    for bad in ("{", "[]", '["a"]', '[{"prefix": "s3://b/"}, 3]'):
        with pytest.raises(plan.PlanError, match="manifest m"):
            plan.parse_manifest(bad, "m")


def test_local_listing_follows_s3_prefix_semantics(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "train" / "b.pbr").write_bytes(b"12")
    (tmp_path / "data" / "train" / "sub").mkdir()
    (tmp_path / "data" / "train" / "sub" / "a.pbr").write_bytes(b"1")
    (tmp_path / "data" / "train-extra.csv").write_bytes(b"123")
    store = LocalStore()
    folder = plan.list_objects(store, str(tmp_path / "data" / "train"), "S3Prefix", "train")
    assert [(o.relative, o.size) for o in folder] == [("b.pbr", 2), ("sub/a.pbr", 1)]
    prefix = plan.list_objects(store, "file://" + str(tmp_path / "data" / "train"), "S3Prefix", "train")
    assert [o.relative for o in prefix] == ["b.pbr", "sub/a.pbr"]
    loose = plan.list_objects(store, str(tmp_path / "data" / "tr"), "S3Prefix", "train")
    assert [o.relative for o in loose] == ["train-extra.csv", "train/b.pbr", "train/sub/a.pbr"]
    with pytest.raises(plan.PlanError, match="channel 'train': no objects found"):
        plan.list_objects(store, str(tmp_path / "nothing-here"), "S3Prefix", "train")


def test_pipe_channels_leave_out_hidden_objects_as_file_mode_does(tmp_path):
    (tmp_path / "train" / ".cache").mkdir(parents=True)
    for name in ("a.pbr", ".amazon.manifest", ".cache/b.pbr"):
        (tmp_path / "train" / name).write_bytes(b"x")
    store = LocalStore()
    listed = plan.list_objects(store, str(tmp_path / "train"), "S3Prefix", "train")
    assert len(listed) == 3  # File mode downloads everything, its reader skips the hidden ones
    piped = plan.list_objects(store, str(tmp_path / "train"), "S3Prefix", "train", skip_hidden=True)
    assert [o.relative for o in piped] == ["a.pbr"]
    (tmp_path / "train" / "a.pbr").unlink()
    with pytest.raises(plan.PlanError, match=r"holds only hidden objects \(.amazon.manifest, .cache/b.pbr\)"):
        plan.list_objects(store, str(tmp_path / "train"), "S3Prefix", "train", skip_hidden=True)
