//! Ward hierarchical clustering (kodama's implementation of Müllner's
//! algorithms) on Euclidean distances, and the cut of its dendrogram into
//! k flat clusters.

pub use kodama::{Dendrogram, Step};

/// Bytes Ward needs for `n` points: the condensed distance matrix of
/// n(n-1)/2 f64 values, which kodama updates in place.
pub fn memory_estimate(n: usize) -> u64 {
    (n as u64) * (n.saturating_sub(1) as u64) / 2 * 8
}

/// Ward's linkage of `points` (rows of equal length), with the same merge
/// order and heights as scipy's `linkage(X, method="ward")`.
/// `progress` is called with the fraction of the distance matrix done.
pub fn ward(points: &[Vec<f32>], progress: &mut dyn FnMut(f64)) -> Dendrogram<f64> {
    let n = points.len();
    let mut condensed = Vec::with_capacity(n * n.saturating_sub(1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let d2: f64 = points[i]
                .iter()
                .zip(&points[j])
                .map(|(a, b)| {
                    let d = (*a - *b) as f64;
                    d * d
                })
                .sum();
            condensed.push(d2.sqrt());
        }
        if i % 256 == 0 {
            progress(i as f64 / n as f64);
        }
    }
    progress(1.0);
    kodama::linkage(&mut condensed, n, kodama::Method::Ward)
}

/// The flat clustering with `k` clusters: the merges of the dendrogram up
/// to the last `k - 1` undone. Returns each point's cluster in `0..k`,
/// numbered by the first point of each cluster, so the labels do not
/// depend on the merge order.
pub fn cut(dendrogram: &Dendrogram<f64>, k: usize) -> Vec<usize> {
    let n = dendrogram.observations();
    let k = k.clamp(1, n.max(1));
    // Union-find over the n points and the n - 1 merged clusters.
    let mut parent: Vec<usize> = (0..2 * n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (s, step) in dendrogram.steps().iter().take(n - k).enumerate() {
        let merged = n + s;
        let (a, b) = (
            root(&mut parent, step.cluster1),
            root(&mut parent, step.cluster2),
        );
        parent[a] = merged;
        parent[b] = merged;
    }
    let mut label_of_root = std::collections::HashMap::new();
    (0..n)
        .map(|i| {
            let r = root(&mut parent, i);
            let next = label_of_root.len();
            *label_of_root.entry(r).or_insert(next)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed once with scipy 1.x: `linkage(X, method="ward")` on these
    /// 13 points (no tied heights, so the merge order is unambiguous).
    const POINTS: [[f32; 2]; 13] = [
        [0.0, 0.1],
        [0.3, 1.2],
        [1.1, 0.2],
        [0.2, 4.3],
        [0.4, 3.1],
        [1.3, 4.0],
        [4.2, 0.5],
        [3.1, 0.0],
        [4.0, 1.4],
        [4.6, 4.1],
        [3.2, 4.4],
        [3.9, 2.9],
        [2.05, 2.6],
    ];
    const SCIPY: [(usize, usize, f64, usize); 12] = [
        (6, 8, 0.921954445729, 2),
        (0, 2, 1.104536101719, 2),
        (3, 5, 1.140175425099, 2),
        (1, 14, 1.246327939723, 3),
        (4, 15, 1.278019300845, 3),
        (9, 11, 1.389244398945, 2),
        (7, 13, 1.592691642053, 3),
        (10, 18, 1.596871942267, 3),
        (12, 17, 2.273855023230, 4),
        (20, 21, 5.421435629583, 7),
        (16, 19, 5.720431219177, 6),
        (22, 23, 7.789106697830, 13),
    ];

    fn points() -> Vec<Vec<f32>> {
        POINTS.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn merges_and_heights_equal_scipy() {
        let d = ward(&points(), &mut |_| {});
        assert_eq!(d.steps().len(), 12);
        for (step, want) in d.steps().iter().zip(SCIPY) {
            assert_eq!(
                (step.cluster1, step.cluster2, step.size),
                (want.0, want.1, want.3)
            );
            // The points are f32; heights agree to f32 precision.
            assert!(
                (step.dissimilarity - want.2).abs() < 1e-5,
                "{} vs {}",
                step.dissimilarity,
                want.2
            );
        }
    }

    #[test]
    fn cutting_separated_blobs_recovers_them() {
        // Four blobs of five points around far-apart corners, interleaved.
        let corners = [[0.0f32, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]];
        let mut pts = Vec::new();
        let mut truth = Vec::new();
        for i in 0..20 {
            let c = corners[i % 4];
            let j = (i / 4) as f32;
            pts.push(vec![c[0] + 0.3 * j, c[1] - 0.2 * j * j]);
            truth.push(i % 4);
        }
        let labels = cut(&ward(&pts, &mut |_| {}), 4);
        // Labels are numbered by first appearance: blob i%4 is cluster i%4.
        assert_eq!(labels, truth);
        assert_eq!(cut(&ward(&pts, &mut |_| {}), 1), vec![0; 20]);
    }

    #[test]
    fn cut_of_the_scipy_set_into_four() {
        // Undoing the last three merges of the table leaves 16 = {0, 1, 2},
        // 19 = {6, 7, 8}, 20 = {9, 10, 11} and 21 = {3, 4, 5, 12}.
        let labels = cut(&ward(&points(), &mut |_| {}), 4);
        assert_eq!(labels, vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 1]);
        assert_eq!(memory_estimate(2000), 2000 * 1999 / 2 * 8);
    }
}
