"""Loading the served model, from a model folder or from a model.tar.gz in it."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipealgos.platform.model_store import ModelFormatError
from pipealgos.serve.model import UnsafeArchiveError, load_served_model


def _tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _model_archive(model_dir: Path, archive: Path, prefix: str = "") -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for item in sorted(model_dir.iterdir()):
            tar.add(item, arcname=prefix + item.name)
    return archive


def test_loads_the_algorithm_named_in_the_manifest(trained_pca):
    served = load_served_model(trained_pca.model_dir)
    assert served.spec.name == "pca"
    assert served.feature_dim == 6
    assert served.spec.outputs == ("projection",) and served.response_key == "projections"
    np.testing.assert_array_equal(served.predict(trained_pca.rows)[0]["projection"], trained_pca.predict(trained_pca.rows))


@pytest.mark.parametrize("prefix", ["", "./", "model/"])
def test_model_tar_gz_is_extracted_and_loaded(trained_pca, tmp_path, prefix):
    folder = tmp_path / "model"
    folder.mkdir()
    _model_archive(trained_pca.model_dir, folder / "model.tar.gz", prefix)
    served = load_served_model(folder)
    np.testing.assert_array_equal(served.predict(trained_pca.rows)[0]["projection"], trained_pca.predict(trained_pca.rows))
    assert sorted(p.name for p in folder.iterdir()) == ["model.tar.gz"]  # extracted elsewhere, folder untouched


def test_an_extracted_model_wins_over_an_archive(trained_pca, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(trained_pca.model_dir, folder)
    (folder / "model.tar.gz").write_bytes(b"not even a tar file")
    assert load_served_model(folder).spec.name == "pca"


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


UNSAFE = {
    "absolute path": ([(_member("/tmp/evil.txt"), b"x")], "absolute path"),
    "dot-dot": ([(_member("../evil.txt"), b"x")], "contains '..'"),
    "nested dot-dot": ([(_member("a/../../evil.txt"), b"x")], "contains '..'"),
    "symlink out": ([(_member("manifest.json", tarfile.SYMTYPE, "/etc/passwd"), None)], "is a link"),
    "symlink inside": ([(_member("m.json", tarfile.SYMTYPE, "manifest.json"), None)], "is a link"),
    "hard link out": ([(_member("manifest.json", tarfile.LNKTYPE, "../../etc/passwd"), None)], "is a link"),
    "fifo": ([(_member("pipe", tarfile.FIFOTYPE), None)], "not a regular file"),
    "device": ([(_member("dev", tarfile.CHRTYPE), None)], "not a regular file"),
}


@pytest.mark.parametrize("case", UNSAFE)
def test_unsafe_archives_are_refused_before_anything_is_written(tmp_path, case):
    entries, message = UNSAFE[case]
    folder = tmp_path / "model"
    folder.mkdir()
    _tar(folder / "model.tar.gz", entries)
    with pytest.raises(UnsafeArchiveError, match=message):
        load_served_model(folder)
    assert not (tmp_path / "evil.txt").exists()


def test_archive_without_manifest_is_a_clear_error(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    _tar(folder / "model.tar.gz", [(_member("model_algo-1"), b"mxnet bytes")])
    with pytest.raises(ModelFormatError, match="no manifest.json at its top level"):
        load_served_model(folder)


def test_corrupt_archive_is_a_clear_error(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.tar.gz").write_bytes(b"\x1f\x8b\x08 truncated gzip")
    with pytest.raises(ModelFormatError, match="not a readable .tar.gz"):
        load_served_model(folder)


def test_empty_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFormatError, match="no manifest.json"):
        load_served_model(tmp_path)
