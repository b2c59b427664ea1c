//! `mat data list` and `mat data fetch`: the datasets of the manifest and
//! whether they are in the cache.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use mat_core::data::{self, DataDir, Source, Status};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Show every dataset of data/datasets.yaml and whether it is in the cache.
    List,
    /// Bring a dataset into the cache from its official URLs, or from a local
    /// folder, and verify every checksum.
    Fetch {
        /// Dataset name from data/datasets.yaml (`mat data list`).
        name: String,
        /// Copy from this folder (files as published, gzipped or not, or the
        /// archive) instead of downloading.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
    },
}

pub fn list(dir: &DataDir) -> anyhow::Result<()> {
    let manifest = dir.manifest()?;
    println!("manifest: {}", dir.manifest_path().display());
    println!("cache:    {}", dir.cache.display());
    println!();
    println!(
        "{:<15} {:<13} {:<12} {:>7} {:>7}  status",
        "name", "format", "image", "train", "test"
    );
    for (name, spec) in &manifest.datasets {
        let status = match data::status(dir, name, spec) {
            Status::Present => "present".to_string(),
            Status::Embedded => "embedded (unpacked on first use)".to_string(),
            Status::Missing(files) => {
                format!("missing {} file(s): `mat data fetch {name}`", files.len())
            }
        };
        let [c, h, w] = spec.image_shape;
        println!(
            "{:<15} {:<13} {:<12} {:>7} {:>7}  {status}",
            name,
            spec.format.to_string(),
            format!("{c}x{h}x{w}"),
            spec.train_size,
            spec.test_size
        );
    }
    Ok(())
}

pub fn fetch(dir: &DataDir, name: &str, from: Option<PathBuf>) -> anyhow::Result<()> {
    let source = match from {
        Some(d) => {
            anyhow::ensure!(d.is_dir(), "--from {}: not a folder", d.display());
            Source::Dir(d)
        }
        None => Source::Official,
    };
    let fetched = data::fetch(dir, name, &source)?;
    for f in &fetched {
        println!("{:<28} {}", f.file, f.from);
    }
    // Loading proves the files are complete and in range, not just present.
    let ds = data::load(dir, name)
        .with_context(|| format!("dataset `{name}` was fetched but does not load"))?;
    println!(
        "{name}: ok, {} train + {} test images of {:?}, {} classes, in {}",
        ds.train.len(),
        ds.test.len(),
        ds.image_shape(),
        ds.num_classes(),
        dir.cache_dir(name).display()
    );
    Ok(())
}
