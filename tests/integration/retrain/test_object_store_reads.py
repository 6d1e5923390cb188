"""Retraining reads reviewed images from an S3-compatible object store (SeaweedFS, loopback).

The reviewed spool is built as usual, read once from the spool, then moved into the object
store under the same keys: the patient groups, the training set and the locked validation set
come out the same from the store (fetched a few at a time), a missing object is
``missing_file``, and an unreachable store is an error, not a silently smaller data set.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.labels import BODY_PARTS
from models.limits import DEFAULT_LIMITS
from models.preprocess import PreprocessParams
from retrain.base_data import BaseDataset
from retrain.review_data import review_training_set
from retrain.stored import read_stored_files
from retrain.validation import LockedCase, review_groups, validation_tensors
from storage.bytestore import ByteStoreUnavailableError, S3ByteStore
from storage.spool import Spool

from review_spool import write_reviewed_spool
from s3server import S3Server, free_port, running_seaweedfs

pytestmark = pytest.mark.timeout(180)

PARAMS = PreprocessParams(input_size=32)
SYNTH = BaseDataset("synthetic", None, n_train=4, seed=3, image_size=64)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def s3_store(server: S3Server, tmp_path: Path, **overrides: object) -> S3ByteStore:
    options: dict[str, object] = {
        "bucket": server.bucket,
        "endpoint_url": server.endpoint,
        "prefix": f"retrain-{uuid.uuid4().hex[:10]}/",
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "connect_timeout": 1,
        "read_timeout": 10,
        "max_attempts": 1,
        "tmp_dir": tmp_path,
    }
    options.update(overrides)
    return S3ByteStore(**options)  # type: ignore[arg-type]


def test_reviewed_images_read_from_the_store_equal_those_from_the_spool(
    s3: S3Server, tmp_path: Path
) -> None:
    spool_root = tmp_path / "spool"
    examples = write_reviewed_spool(spool_root, patients=3, size=64)
    groups = review_groups(examples, spool_root, "salt")
    local = review_training_set(examples, spool_root, PARAMS, BODY_PARTS, salt="salt", locked=())
    cases = [
        LockedCase(
            "review", ex.sop_instance_uid, ex.study_id, groups[ex.sop_instance_uid], ex.label
        )
        for ex in examples[:3]
    ]
    paths = {ex.sop_instance_uid: ex.spool_path for ex in examples}
    local_validation = validation_tensors(cases, SYNTH, spool_root, PARAMS, review_paths=paths)

    fetched = tmp_path / "fetched"
    fetched.mkdir()
    store = s3_store(s3, fetched)
    spool = Spool(spool_root)
    for ex in examples:
        store.put_file(ex.spool_path, spool.absolute(ex.spool_path))
        spool.remove(ex.spool_path)
    elsewhere = tmp_path / "no-such-spool"  # the worker's own data directory, empty

    assert review_groups(examples, elsewhere, "salt", store=store) == groups
    remote = review_training_set(
        examples, elsewhere, PARAMS, BODY_PARTS, salt="salt", locked=(), store=store
    )
    assert remote.skipped == local.skipped == {}
    assert [im.as_json() for im in remote.images] == [im.as_json() for im in local.images]
    assert torch.equal(remote.tensors.pixels, local.tensors.pixels)
    validation = validation_tensors(
        cases, SYNTH, elsewhere, PARAMS, review_paths=paths, store=store
    )
    assert validation.sha256 == local_validation.sha256
    assert torch.equal(validation.tensors.pixels, local_validation.tensors.pixels)
    assert list(fetched.iterdir()) == []  # every fetched copy removed

    # a batch at a time; a missing object is missing_file, the others are read
    store.delete(examples[1].spool_path)
    jobs = [(ex.spool_path, "salt", "x", PARAMS, DEFAULT_LIMITS) for ex in examples]
    reads = read_stored_files(store, jobs, batch=2)
    assert [r.problem for r in reads] == [None, "missing_file"] + [None] * (len(examples) - 2)
    assert list(fetched.iterdir()) == []


def test_an_unreachable_store_is_an_error(tmp_path: Path) -> None:
    spool_root = tmp_path / "spool"
    examples = write_reviewed_spool(spool_root, patients=1, size=64)
    down = S3ByteStore(
        bucket="xrayd-test",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key_id="AK",
        secret_access_key="SK",
        connect_timeout=1,
        read_timeout=2,
        max_attempts=1,
        tmp_dir=tmp_path,
    )
    with pytest.raises(ByteStoreUnavailableError):
        review_training_set(
            examples, spool_root, PARAMS, BODY_PARTS, salt="salt", locked=(), store=down
        )
