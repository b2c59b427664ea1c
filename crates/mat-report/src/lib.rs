//! The paper's tables from the stage outputs, each cell "ours (paper)", as
//! Markdown and CSV.

pub mod cluster_tables;
pub mod error;
pub mod figures;
pub mod layout;
pub mod output;
pub mod paper;
pub mod robustness;
pub mod table2;
pub mod table3;
pub mod table4;

pub use error::{Error, Result};
