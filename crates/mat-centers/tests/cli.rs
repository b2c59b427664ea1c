//! `mat-centers` as a program: the file it writes, and its refusals.

use std::process::Command;

use candle_core::Device;
use mat_core::artifact::TensorFile;

fn centers(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mat-centers"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn writes_centers_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.safetensors");
    let o = centers(&[
        "--classes",
        "10",
        "--dim",
        "256",
        "--norm",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = TensorFile::read(&out, &Device::Cpu).unwrap();
    assert_eq!(f.get("centers").unwrap().dims(), &[10, 256]);
    for (k, v) in [
        ("kind", "centers"),
        ("num_classes", "10"),
        ("feature_dim", "256"),
        ("norm", "10"),
    ] {
        assert_eq!(f.meta(k).unwrap(), v, "{k}");
    }
}

#[test]
fn too_small_a_dimension_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.safetensors");
    let o = centers(&[
        "--classes",
        "10",
        "--dim",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error: feature dimension 5 is too small for 10 classes"),
        "{err}"
    );
    assert!(err.contains("at least L - 1 = 9"), "{err}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
