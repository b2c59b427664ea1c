//! Analysis of learned features: Ward clustering and the match rate
//! (Table 1), cosine similarity to the class centers (Table 5), t-SNE maps
//! (Figure 1).

pub mod match_rate;
pub mod run;
pub mod tsne;
pub mod ward;

pub use match_rate::{cosine_summary, match_rate, Clusters};
pub use tsne::Tsne;
pub use ward::{cut, memory_estimate, ward};
