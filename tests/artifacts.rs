//! The artifact contract end to end: `mat inspect`, bad files, and interop
//! with the Python tools a researcher opens artifacts with.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use common::*;
use mat_core::artifact::{write_table, write_tensors, Columns, Metadata, Table, TensorFile};

fn provenance() -> Metadata {
    [("kind", "adv"), ("attack", "pgd"), ("eps", "0.3")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A small adversarial-examples table: 3 rows, 1x4x4 images.
fn write_adv(path: &Path) -> Vec<f32> {
    let image: Vec<f32> = (0..3 * 16)
        .map(|i| (i as f32 / 47.0 * 1000.0).round() / 1000.0)
        .collect();
    let cols = Columns::new()
        .u32("index", vec![0, 1, 2])
        .u32("label", vec![7, 2, 7])
        .u32("adv_pred", vec![3, 2, 1])
        .bool("success", vec![true, false, true])
        .f32("l2", vec![1.25, 0.0, 2.5])
        .f32_list("image", image.clone(), &[1, 4, 4]);
    write_table(path, cols, provenance()).unwrap();
    image
}

fn write_model(path: &Path) -> (Tensor, Tensor) {
    let w = Tensor::arange(0f32, 12., &Device::Cpu)
        .unwrap()
        .reshape((3, 4))
        .unwrap();
    let b = Tensor::new(&[0.5f32, -0.5, 1.5], &Device::Cpu).unwrap();
    let meta: Metadata = [("kind", "model"), ("arch", "smallcnn")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    write_tensors(path, [("fc.weight", &w), ("fc.bias", &b)], &meta).unwrap();
    (w, b)
}

#[test]
fn inspect_prints_parquet_and_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let adv = dir.path().join("adv.parquet");
    let model = dir.path().join("model.safetensors");
    write_adv(&adv);
    write_model(&model);

    let out = mat(dir.path(), &["inspect", adv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    for want in [
        "Parquet, 3 rows, 6 columns",
        "image                FixedSizeList<Float32>[16]  shape [1, 4, 4]",
        "attack = pgd",
        "histogram {2: 1, 7: 2}",
        "2 true, 1 false",
        "first 3 rows:",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }

    let out = mat(dir.path(), &["inspect", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(
        s.contains("safetensors, 2 tensors") && s.contains("arch = smallcnn"),
        "{s}"
    );
    assert!(s.contains("fc.weight") && s.contains("[3, 4]"), "{s}");
}

#[test]
fn bad_artifacts_fail_cleanly_and_stay_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let adv = dir.path().join("adv.parquet");
    write_adv(&adv);
    let mut cut = std::fs::read(&adv).unwrap();
    cut.truncate(cut.len() / 2);
    let truncated = dir.path().join("truncated.parquet");
    std::fs::write(&truncated, &cut).unwrap();
    let garbage = dir.path().join("weights.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7f{").unwrap();

    for (file, want) in [
        (&truncated, "truncated.parquet: not a readable Parquet file"),
        (
            &garbage,
            "weights.safetensors: not a valid safetensors file",
        ),
        (
            &dir.path().join("absent.parquet"),
            "absent.parquet: No such file",
        ),
    ] {
        let out = mat(dir.path(), &["inspect", file.to_str().unwrap()]);
        let err = assert_clean_failure(&out);
        assert!(err.contains(want), "{err}");
    }
    assert_eq!(
        std::fs::read(&truncated).unwrap(),
        cut,
        "inspect must not touch its input"
    );
}

#[test]
fn readers_name_the_column_or_tensor_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let adv = dir.path().join("adv.parquet");
    write_adv(&adv);
    let t = Table::read(&adv).unwrap();
    let e = t.f32_list("features", 256).unwrap_err().to_string();
    assert!(
        e.contains("adv.parquet: column `features`: expected a column of that name"),
        "{e}"
    );
    let e = t.f32_list("image", 784).unwrap_err().to_string();
    assert!(e.contains("column `image`: expected FixedSizeList<Float32> of length 784, found FixedSizeList<Float32> of length 16"), "{e}");

    let model = dir.path().join("model.safetensors");
    write_model(&model);
    let f = TensorFile::read(&model, &Device::Cpu).unwrap();
    let e = f
        .expect("fc.weight", candle_core::DType::F32, &[Some(10), Some(4)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.safetensors: tensor `fc.weight`: expected F32 [10, 4], found F32 [3, 4]"),
        "{e}"
    );
}

/// pyarrow, numpy and safetensors read what we write, value for value.
/// `.ci/run` installs them and sets MAT_REQUIRE_PYTHON=1, so CI cannot skip.
#[test]
fn python_reads_our_artifacts() {
    let required = std::env::var_os("MAT_REQUIRE_PYTHON").is_some_and(|v| v == "1");
    let probe = Command::new("python3")
        .args(["-c", "import pyarrow, numpy, safetensors"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            !required,
            "MAT_REQUIRE_PYTHON=1 but pyarrow/numpy/safetensors are not importable"
        );
        eprintln!("skipped: python3 with pyarrow, numpy and safetensors not found (pip install pyarrow numpy safetensors)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let adv = dir.path().join("adv.parquet");
    let model = dir.path().join("model.safetensors");
    let image = write_adv(&adv);
    let (w, b) = write_model(&model);
    let expected = serde_json::json!({
        "rows": 3,
        "index": [0, 1, 2],
        "label": [7, 2, 7],
        "success": [true, false, true],
        "l2": [1.25, 0.0, 2.5],
        "image": image,
        "image_shape": [1, 4, 4],
        "metadata": provenance(),
        "fc.weight": w.to_vec2::<f32>().unwrap(),
        "fc.bias": b.to_vec1::<f32>().unwrap(),
        "model_metadata": {"kind": "model", "arch": "smallcnn"},
    });
    let json = dir.path().join("expected.json");
    std::fs::write(&json, expected.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop_check.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([&adv, &model, &json])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("interop ok"), "{}", stdout(&out));
}
