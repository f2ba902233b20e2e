"""Loading the served model, from a model folder or from a model.tar.gz in it."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipealgos.platform.model_store import ModelFormatError
from pipealgos.serve.model import UnsafeArchiveError, extract_archive, load_served_model
from pipealgos.serve.settings import ServeConfigError


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
    "dot-dot": ([(_member("../evil.txt"), b"x")], "outside the destination"),
    "nested dot-dot": ([(_member("a/../../evil.txt"), b"x")], "outside the destination"),
    "symlink out": ([(_member("manifest.json", tarfile.SYMTYPE, "/etc/passwd"), None)], "is a link"),
    "symlink inside": ([(_member("m.json", tarfile.SYMTYPE, "manifest.json"), None)], "is a link"),
    "hard link out": ([(_member("manifest.json", tarfile.LNKTYPE, "../../etc/passwd"), None)], "is a link"),
    "fifo": ([(_member("pipe", tarfile.FIFOTYPE), None)], "is a special file"),
    "device": ([(_member("dev", tarfile.CHRTYPE), None)], "is a special file"),
}


@pytest.mark.parametrize("case", UNSAFE)
def test_unsafe_archives_are_refused_before_anything_is_written(tmp_path, case):
    entries, message = UNSAFE[case]
    archive = _tar(tmp_path / "model.tar.gz", [(_member("first.txt"), b"written only if all pass"), *entries])
    destination = tmp_path / "scratch" / "inner"
    destination.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_archive(archive, destination, max_bytes=1 << 20)
    assert list(destination.iterdir()) == []
    assert not (tmp_path / "scratch" / "evil.txt").exists()


def test_unsafe_archive_stops_the_model_loading(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    _tar(folder / "model.tar.gz", [(_member("../evil.txt"), b"x")])
    with pytest.raises(UnsafeArchiveError, match="unsafe member refused"):
        load_served_model(folder)


def test_absolute_member_paths_land_inside_the_extraction_folder(tmp_path):
    """tarfile's data filter strips the leading slash: nothing is written at the absolute path."""
    target = tmp_path / "absolute" / "evil.txt"
    archive = _tar(tmp_path / "model.tar.gz", [(_member(str(target)), b"x")])
    destination = tmp_path / "scratch"
    destination.mkdir()
    extract_archive(archive, destination, max_bytes=1 << 20)
    assert not target.exists()
    assert (destination / str(target).lstrip("/")).read_bytes() == b"x"


def test_archive_over_the_size_cap_is_refused_before_extracting(tmp_path):
    archive = _tar(tmp_path / "model.tar.gz", [(_member("a"), bytes(600_000)), (_member("b"), bytes(600_000))])
    destination = tmp_path / "scratch"
    destination.mkdir()
    with pytest.raises(ModelFormatError, match="would extract to more than 1048576 bytes .member 'b' brings it "
                                               "to 1200000.: raise PIPEALGOS_MODEL_MAX_EXTRACTED_MB"):
        extract_archive(archive, destination, max_bytes=1 << 20)
    assert list(destination.iterdir()) == []


def test_a_zip_bomb_is_refused_from_its_header_under_the_default_cap(tmp_path, monkeypatch):
    """A member announcing 5 GiB: refused as its header is read. Its data is not even there, so
    reading on would fail differently; the default cap (4096 MB) applies."""
    monkeypatch.delenv("PIPEALGOS_MODEL_MAX_EXTRACTED_MB", raising=False)
    folder = tmp_path / "model"
    folder.mkdir()
    bomb = _member("model_algo-1.npz")
    bomb.size = 5 << 30
    with tarfile.open(folder / "model.tar.gz", "w:gz") as tar:
        tar.addfile(_member_with_data("manifest.json", b"{}"), io.BytesIO(b"{}"))
        tar.addfile(bomb)  # header only
    with pytest.raises(ModelFormatError, match="would extract to more than 4294967296 bytes"):
        load_served_model(folder)


def test_the_size_cap_is_a_setting(trained_pca, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    _model_archive(trained_pca.model_dir, folder / "model.tar.gz")
    monkeypatch.setenv("PIPEALGOS_MODEL_MAX_EXTRACTED_MB", "0.0001")  # 104 bytes: less than the manifest
    with pytest.raises(ModelFormatError, match="would extract to more than 104 bytes"):
        load_served_model(folder)
    monkeypatch.setenv("PIPEALGOS_MODEL_MAX_EXTRACTED_MB", "lots")
    with pytest.raises(ServeConfigError, match="PIPEALGOS_MODEL_MAX_EXTRACTED_MB='lots'"):
        load_served_model(folder)
    monkeypatch.setenv("PIPEALGOS_MODEL_MAX_EXTRACTED_MB", "1")
    assert load_served_model(folder).spec.name == "pca"


def _member_with_data(name: str, data: bytes) -> tarfile.TarInfo:
    info = _member(name)
    info.size = len(data)
    return info


# --- the manifest and its arrays file (platform.model_store.load_model) -----------------------


def _copy_with_manifest(trained_pca, folder: Path, **changes) -> Path:
    """A copy of the trained model whose manifest has ``changes`` (None removes a key)."""
    shutil.copytree(trained_pca.model_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key)
        else:
            manifest[key] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("arrays_file", ["../outside.npz", "sub/../../outside.npz", "ABSOLUTE", ".", ""])
def test_arrays_file_outside_the_model_folder_is_refused(trained_pca, tmp_path, arrays_file):
    shutil.copy(trained_pca.model_dir / "model_algo-1.npz", tmp_path / "outside.npz")
    name = str(tmp_path / "outside.npz") if arrays_file == "ABSOLUTE" else arrays_file
    folder = _copy_with_manifest(trained_pca, tmp_path / "model", arrays_file=name)
    with pytest.raises(ModelFormatError, match="is not a file inside"):
        load_served_model(folder)


def test_arrays_file_symlinked_out_of_the_model_folder_is_refused(trained_pca, tmp_path):
    shutil.copy(trained_pca.model_dir / "model_algo-1.npz", tmp_path / "outside.npz")
    folder = _copy_with_manifest(trained_pca, tmp_path / "model", arrays_file="linked.npz")
    (folder / "linked.npz").symlink_to(tmp_path / "outside.npz")
    with pytest.raises(ModelFormatError, match="arrays_file 'linked.npz' is not a file inside"):
        load_served_model(folder)


def test_arrays_file_in_a_subfolder_and_a_link_inside_are_fine(trained_pca, tmp_path):
    folder = _copy_with_manifest(trained_pca, tmp_path / "model", arrays_file="sub/arrays.npz")
    (folder / "sub").mkdir()
    (folder / "model_algo-1.npz").rename(folder / "sub" / "arrays.npz")
    assert load_served_model(folder).spec.name == "pca"


MANIFEST_PROBLEMS = {  # (changes to the trained model's manifest, or the whole file's bytes; message)
    "a list": (b"[1, 2]", "holds a JSON list, not the manifest object"),
    "missing keys": (b'{"format": "pipealgos-model", "format_version": 2, "algorithm": "pca"}',
                     r"lacks \['arrays', 'arrays_file', 'hyperparameters'\]"),
    "not UTF-8": (b"\xff\xfe{", "is not valid JSON"),
    "arrays not an object": ({"arrays": []}, r"'arrays' is \[\], which is not a valid arrays"),
    "feature_dim a string": ({"feature_dim": "six"}, "'feature_dim' is \"six\""),
    "feature_dim a boolean": ({"feature_dim": True}, "'feature_dim' is true"),
    "unknown version": ({"format_version": 3}, "unsupported model format 'pipealgos-model' version 3"),
}


@pytest.mark.parametrize("case", MANIFEST_PROBLEMS)
def test_a_broken_manifest_is_a_clear_error(trained_pca, tmp_path, case):
    content, message = MANIFEST_PROBLEMS[case]
    folder = _copy_with_manifest(trained_pca, tmp_path / "model", **(content if isinstance(content, dict) else {}))
    if isinstance(content, bytes):
        (folder / "manifest.json").write_bytes(content)
    with pytest.raises(ModelFormatError, match=message):
        load_served_model(folder)


def _object_npz(path: Path) -> None:
    np.savez(path, v=np.array([{"pickled": True}], dtype=object))


ARRAYS_PROBLEMS = {
    "a .npy": (lambda path: np.save(path.with_suffix(".npy"), np.ones(3)) or path.with_suffix(".npy").rename(path),
               "is a single .npy array"),
    "text": (lambda path: path.write_text("v,s\n1,2\n"), "not a readable npz archive"),
    "pickled objects": (_object_npz, "not a readable npz archive of numeric arrays .Object arrays cannot be loaded"),
    "missing": (lambda path: path.unlink(), "the manifest's arrays_file, does not exist"),
    "a folder": (lambda path: path.unlink() or path.mkdir(), "not a readable npz archive"),
}


@pytest.mark.parametrize("case", ARRAYS_PROBLEMS)
def test_an_arrays_file_that_is_not_an_npz_is_a_clear_error(trained_pca, tmp_path, case):
    spoil, message = ARRAYS_PROBLEMS[case]
    folder = _copy_with_manifest(trained_pca, tmp_path / "model")
    spoil(folder / "model_algo-1.npz")
    with pytest.raises(ModelFormatError, match=message):
        load_served_model(folder)


def test_a_format_1_manifest_still_loads(trained_pca, tmp_path):
    folder = _copy_with_manifest(trained_pca, tmp_path / "model", format_version=1,
                                 resolved_hyperparameters=None, feature_dim=None)
    served = load_served_model(folder)
    np.testing.assert_array_equal(served.predict(trained_pca.rows)[0]["projection"], trained_pca.predict(trained_pca.rows))


def test_archive_with_an_unreadable_model_algo_1_is_a_clear_error(tmp_path):
    """No manifest but a model_algo-1: read as a SageMaker model, refused naming the file."""
    folder = tmp_path / "model"
    folder.mkdir()
    _tar(folder / "model.tar.gz", [(_member("model_algo-1"), b"mxnet bytes")])
    with pytest.raises(ModelFormatError, match="model_algo-1 has no layout pipealgos recognises"):
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
