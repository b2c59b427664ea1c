//! Table 1's match rate and Table 5's cosine similarity (definitions and
//! the choices the paper leaves open: REFERENCE.md).
//!
//! Match rate: the clusters come from Ward on a fit set; C(x) is the
//! cluster whose centroid is nearest to phi(x); dom(C) is the most common
//! predicted class among C's fit members (ties: the smaller class);
//! the match rate of a set is the mean of [dom(C(x)) == f(x)].

/// The clusters of a fit, ready to assign new points.
#[derive(Debug, Clone, PartialEq)]
pub struct Clusters {
    /// Mean of each cluster's fit members.
    pub centroids: Vec<Vec<f64>>,
    /// The most common prediction among each cluster's fit members.
    pub dominant: Vec<u32>,
    /// Fit members per cluster.
    pub sizes: Vec<usize>,
}

impl Clusters {
    /// From fit points, their cluster labels (`0..k`) and predictions.
    pub fn fit(points: &[Vec<f32>], labels: &[usize], predictions: &[u32]) -> Self {
        let k = labels.iter().max().map_or(0, |m| m + 1);
        let dim = points.first().map_or(0, Vec::len);
        let mut centroids = vec![vec![0.0f64; dim]; k];
        let mut sizes = vec![0usize; k];
        let classes = predictions.iter().max().map_or(0, |m| *m as usize + 1);
        let mut votes = vec![vec![0usize; classes]; k];
        for ((p, &c), &pred) in points.iter().zip(labels).zip(predictions) {
            for (acc, v) in centroids[c].iter_mut().zip(p) {
                *acc += *v as f64;
            }
            sizes[c] += 1;
            votes[c][pred as usize] += 1;
        }
        for (c, n) in centroids.iter_mut().zip(&sizes) {
            for v in c.iter_mut() {
                *v /= (*n).max(1) as f64;
            }
        }
        let dominant = votes
            .iter()
            .map(|v| {
                // max_by_key keeps the last maximum; scan for the first.
                let best = v.iter().copied().max().unwrap_or(0);
                v.iter().position(|&x| x == best).unwrap_or(0) as u32
            })
            .collect();
        Self {
            centroids,
            dominant,
            sizes,
        }
    }

    /// The cluster whose centroid is nearest to `p` (Euclidean).
    pub fn nearest(&self, p: &[f32]) -> usize {
        let d2 =
            |c: &Vec<f64>| -> f64 { c.iter().zip(p).map(|(a, b)| (a - *b as f64).powi(2)).sum() };
        (0..self.centroids.len())
            .min_by(|&a, &b| d2(&self.centroids[a]).total_cmp(&d2(&self.centroids[b])))
            .unwrap_or(0)
    }

    /// Per point: its nearest cluster and whether that cluster's dominant
    /// class equals the point's prediction.
    pub fn assign(&self, points: &[Vec<f32>], predictions: &[u32]) -> Vec<(usize, bool)> {
        points
            .iter()
            .zip(predictions)
            .map(|(p, &pred)| {
                let c = self.nearest(p);
                (c, self.dominant[c] == pred)
            })
            .collect()
    }
}

/// The mean of the match flags.
pub fn match_rate(matches: &[bool]) -> f64 {
    matches.iter().filter(|m| **m).count() as f64 / matches.len().max(1) as f64
}

/// Table 5: cosine similarity of phi(x) to its predicted class's center,
/// averaged per predicted class, then mean and population standard
/// deviation of those class means over the classes that occur.
pub fn cosine_summary(cos_to_predicted: &[f32], predictions: &[u32]) -> (f64, f64) {
    let mut per_class: std::collections::BTreeMap<u32, (f64, usize)> = Default::default();
    for (&c, &p) in cos_to_predicted.iter().zip(predictions) {
        let e = per_class.entry(p).or_default();
        e.0 += c as f64;
        e.1 += 1;
    }
    let means: Vec<f64> = per_class.values().map(|(s, n)| s / *n as f64).collect();
    if means.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = means.iter().sum::<f64>() / means.len() as f64;
    let var = means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / means.len() as f64;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two clusters on a line. Fit: cluster 0 = {0, 1, 2} with predictions
    /// (3, 3, 5) → dominant 3, centroid 1; cluster 1 = {10, 12} with
    /// predictions (5, 5) → dominant 5, centroid 11. Evaluated points:
    /// 0.5 (pred 3: match), 2.0 (pred 5: no), 11.5 (pred 5: match),
    /// 7.0 (nearer 11 than 1: cluster 1, pred 3: no). Match rate 2/4.
    #[test]
    fn match_rate_on_a_hand_example() {
        let fit: Vec<Vec<f32>> = [0.0, 1.0, 2.0, 10.0, 12.0]
            .iter()
            .map(|v| vec![*v])
            .collect();
        let c = Clusters::fit(&fit, &[0, 0, 0, 1, 1], &[3, 3, 5, 5, 5]);
        assert_eq!(c.dominant, vec![3, 5]);
        assert_eq!(c.centroids, vec![vec![1.0], vec![11.0]]);
        let eval: Vec<Vec<f32>> = [0.5, 2.0, 11.5, 7.0].iter().map(|v| vec![*v]).collect();
        let a = c.assign(&eval, &[3, 5, 5, 3]);
        assert_eq!(a, vec![(0, true), (0, false), (1, true), (1, false)]);
        let flags: Vec<bool> = a.iter().map(|x| x.1).collect();
        assert_eq!(match_rate(&flags), 0.5);
    }

    #[test]
    fn ties_in_the_vote_go_to_the_smaller_class() {
        let fit: Vec<Vec<f32>> = vec![vec![0.0], vec![0.1]];
        assert_eq!(Clusters::fit(&fit, &[0, 0], &[4, 2]).dominant, vec![2]);
    }

    #[test]
    fn cosine_summary_averages_classes_first() {
        // Class 0: 1.0, 0.8 → 0.9; class 1: 0.5 → 0.5. Mean 0.7, std 0.2.
        let (m, s) = cosine_summary(&[1.0, 0.8, 0.5], &[0, 0, 1]);
        assert!((m - 0.7).abs() < 1e-6 && (s - 0.2).abs() < 1e-6, "{m} {s}");
    }
}
