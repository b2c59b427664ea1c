//! The paper's numbers (REFERENCE.md), for the side-by-side cells.

/// A Table 2 row: the method's key (the run folder's name), its label in
/// the paper, then CIFAR-10 and MNIST as (clean %, PGD %, C&W mean L2,
/// DDN mean L2).
pub struct Table2Row {
    pub key: &'static str,
    pub label: &'static str,
    pub cifar10: [f64; 4],
    pub mnist: [f64; 4],
}

pub const TABLE2: [Table2Row; 7] = [
    Table2Row {
        key: "natural",
        label: "Natural",
        cifar10: [95.76, 0.03, 0.432, 0.134],
        mnist: [99.54, 0.19, 0.687, 0.357],
    },
    Table2Row {
        key: "at",
        label: "AT",
        cifar10: [78.49, 45.93, 0.770, 1.054],
        mnist: [99.30, 88.26, 0.755, 2.545],
    },
    Table2Row {
        key: "trades",
        label: "TRADES",
        cifar10: [84.92, 56.61, 0.722, 0.823],
        mnist: [99.34, 94.38, 0.342, 2.852],
    },
    Table2Row {
        key: "mat-ftc",
        label: "MAT SO X BIBO X",
        cifar10: [94.93, 3.45, 0.488, 0.235],
        mnist: [99.64, 61.62, 0.389, 1.305],
    },
    Table2Row {
        key: "mat-bibo",
        label: "MAT SO X BIBO O",
        cifar10: [85.04, 53.58, 1.234, 0.924],
        mnist: [99.34, 99.30, 2.313, 6.103],
    },
    Table2Row {
        key: "mat-so",
        label: "MAT SO O BIBO X",
        cifar10: [95.21, 79.92, 0.576, 0.595],
        mnist: [99.68, 82.06, 0.418, 1.570],
    },
    Table2Row {
        key: "mat-full",
        label: "MAT SO O BIBO O",
        cifar10: [83.80, 80.55, 2.457, 2.750],
        mnist: [99.32, 99.28, 2.063, 4.723],
    },
];

/// Table 1, match rate (%), rows Clean, PGD, DDN; columns MNIST-N,
/// CIFAR10-N, MNIST-T, CIFAR10-T (N natural, T TRADES).
pub const TABLE1: [(&str, [f64; 4]); 3] = [
    ("Clean", [99.61, 99.31, 99.67, 91.65]),
    ("PGD", [46.84, 74.44, 98.43, 77.42]),
    ("DDN", [27.66, 51.53, 63.64, 56.96]),
];

/// A Table 5 row: the method's key, its label, and (mean, std) for
/// CIFAR-10 clean, CIFAR-10 PGD, MNIST clean, MNIST PGD.
pub struct Table5Row {
    pub key: &'static str,
    pub label: &'static str,
    pub cells: [(f64, f64); 4],
}

/// Table 5, cosine similarity to the predicted center.
pub const TABLE5: [Table5Row; 4] = [
    Table5Row {
        key: "mat-ftc",
        label: "MAT SO X BIBO X",
        cells: [
            (0.993, 0.035),
            (0.935, 0.102),
            (0.999, 0.008),
            (0.843, 0.145),
        ],
    },
    Table5Row {
        key: "mat-bibo",
        label: "MAT SO X BIBO O",
        cells: [
            (0.879, 0.123),
            (0.615, 0.068),
            (0.995, 0.023),
            (0.727, 0.020),
        ],
    },
    Table5Row {
        key: "mat-so",
        label: "MAT SO O BIBO X",
        cells: [
            (0.993, 0.034),
            (0.996, 0.015),
            (0.999, 0.008),
            (0.790, 0.116),
        ],
    },
    Table5Row {
        key: "mat-full",
        label: "MAT SO O BIBO O",
        cells: [
            (0.845, 0.133),
            (0.569, 0.075),
            (0.996, 0.021),
            (0.762, 0.055),
        ],
    },
];

/// Table 4, accuracy (%) under PGD and under adaptive PGD: CIFAR-10 PGD,
/// CIFAR-10 adaptive, MNIST PGD, MNIST adaptive.
pub const TABLE4: [(&str, &str, [f64; 4]); 5] = [
    ("trades", "TRADES", [56.61, 56.26, 94.38, 93.06]),
    ("mat-ftc", "MAT SO X BIBO X", [3.45, 0.45, 76.79, 9.78]),
    ("mat-bibo", "MAT SO X BIBO O", [53.58, 52.27, 99.30, 92.23]),
    ("mat-so", "MAT SO O BIBO X", [79.92, 1.27, 82.06, 9.79]),
    ("mat-full", "MAT SO O BIBO O", [80.55, 53.65, 99.28, 92.66]),
];

/// Table 3 (CIFAR-10 vs MMC): clean, then at eps 8/255 PGD10 targeted,
/// PGD10 untargeted, PGD50 targeted, PGD50 untargeted, then the same four
/// at 16/255. "<=1" in the paper (under 1%) is stored as 1.0 with
/// `at_most` set.
pub const TABLE3: [(&str, &str, [f64; 9]); 4] = [
    (
        "natural",
        "Natural",
        [92.9, 1.0, 3.7, 1.0, 3.6, 1.0, 2.9, 1.0, 2.6],
    ),
    (
        "at",
        "AT",
        [80.9, 69.8, 55.4, 69.4, 53.9, 53.3, 34.1, 38.5, 21.5],
    ),
    (
        "mmc",
        "MMC",
        [81.8, 70.8, 56.3, 70.1, 55.0, 54.7, 37.4, 39.9, 27.7],
    ),
    (
        "mat-full",
        "MAT",
        [83.8, 80.1, 80.4, 76.1, 80.4, 79.0, 79.9, 60.4, 79.8],
    ),
];

/// The cells of [`TABLE3`] the paper gives as "<=1".
pub fn table3_at_most(row: usize, col: usize) -> bool {
    row == 0 && matches!(col, 1 | 3 | 5 | 7)
}
