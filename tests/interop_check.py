"""Reads a Parquet and a safetensors file written by mat and compares them
with the values the Rust test expected. Exit status 0 means they agree."""

import json
import sys

import numpy as np
import pyarrow.parquet as pq
from safetensors import safe_open
from safetensors.numpy import load_file


def main(adv_path: str, model_path: str, expected_path: str) -> None:
    want = json.load(open(expected_path))

    table = pq.read_table(adv_path)
    assert table.num_rows == want["rows"], table.num_rows
    for col in ("index", "label"):
        np.testing.assert_array_equal(table[col].to_numpy(), want[col])
    assert table["index"].type == "uint32", table["index"].type
    assert table["success"].to_pylist() == want["success"]
    np.testing.assert_allclose(table["l2"].to_numpy(), want["l2"], rtol=0, atol=0)
    # FixedSizeList<Float32> -> one (rows, 16) float32 array, reshaped by the
    # shape stored in the file's metadata.
    images = np.stack(table["image"].to_numpy(zero_copy_only=False)).astype(np.float32)
    shape = json.loads(table.schema.metadata[b"shape:image"])
    assert shape == want["image_shape"], shape
    images = images.reshape([-1, *shape])
    np.testing.assert_array_equal(images.ravel(), np.asarray(want["image"], dtype=np.float32))
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    for k, v in want["metadata"].items():
        assert meta[k] == v, (k, meta.get(k), v)
    # The key-value metadata is also in the Parquet footer for non-Arrow readers.
    footer = pq.read_metadata(adv_path).metadata
    assert footer[b"attack"] == b"pgd", footer
    assert pq.read_metadata(adv_path).row_group(0).column(0).compression == "ZSTD"

    tensors = load_file(model_path)
    np.testing.assert_array_equal(tensors["fc.weight"], np.asarray(want["fc.weight"], dtype=np.float32))
    np.testing.assert_array_equal(tensors["fc.bias"], np.asarray(want["fc.bias"], dtype=np.float32))
    with safe_open(model_path, framework="numpy") as f:
        assert f.metadata() == want["model_metadata"], f.metadata()
    print("interop ok")


if __name__ == "__main__":
    main(*sys.argv[1:4])
