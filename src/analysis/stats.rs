//! Statistics behind the experiment verdict: the Mann-Whitney U test, the Hodges-Lehmann shift
//! estimate and its confidence interval, significance classification and noise summaries.
//!
//! Everything here is pure and std-only. Samples are plain `f64` slices, typically one value per
//! measurement step per variant. Functions are written "about `a` relative to `b`": in the verdict
//! `a` is the candidate pipeline and `b` the baseline, so "the candidate is significantly lower"
//! is [`Alternative::Less`], and a negative shift means the candidate measures lower.
//!
//! The test is the one Kayenta's Mann-Whitney classifier is built on (modelled on R's
//! `wilcox.test`): the normal approximation to U with the tie correction of the variance and a
//! continuity correction. Kayenta judges by the shift's confidence interval; both it
//! ([`shift_confidence_interval`]) and the p-value ([`SignificanceCriteria`]) are available here.
//! Its p-values match `scipy.stats.mannwhitneyu(a, b, alternative=..., method="asymptotic",
//! use_continuity=True)`; the tests pin that against numbers computed with SciPy 1.17.

use std::f64::consts::{FRAC_2_SQRT_PI, SQRT_2};

/// The alternative hypothesis a p-value is computed for, stated about `a` relative to `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alternative {
    /// `a` and `b` differ in location, in either direction.
    #[default]
    TwoSided,
    /// `a` tends to be lower than `b` (the candidate uses less than the baseline).
    Less,
    /// `a` tends to be higher than `b`.
    Greater,
}

/// The result of a Mann-Whitney U test of `a` against `b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// Size of sample `a`.
    pub n_a: usize,
    /// Size of sample `b`.
    pub n_b: usize,
    /// U for `a`: the number of pairs `(a_i, b_j)` with `a_i > b_j`, ties counting one half
    /// (SciPy's `statistic`). Ranges over `0..=n_a·n_b`.
    pub u_a: f64,
    /// U for `b`: `n_a·n_b − u_a`.
    pub u_b: f64,
    /// Signed standard score of `u_a`: `(u_a − n_a·n_b/2)` moved 0.5 toward zero (continuity
    /// correction, never past zero) over the tie-corrected standard deviation of U. Negative when
    /// `a` tends lower than `b`; 0 when every value is tied.
    pub z: f64,
    /// p-value for [`MannWhitney::alternative`], in `[0, 1]`. For one-sided alternatives the
    /// continuity correction moves U toward the tested tail, as R and SciPy do. It can underflow
    /// to 0 for very large, completely separated samples (|z| > ~38).
    pub p_value: f64,
    /// The alternative the p-value is for.
    pub alternative: Alternative,
    /// Hodges-Lehmann estimate of the location shift of `a` relative to `b`: the median of the
    /// `n_a·n_b` pairwise differences `a_i − b_j`. In the units of the samples; negative when
    /// `a` tends lower. See [`shift_confidence_interval`] for an interval around it.
    pub shift: f64,
}

/// Two-sided Mann-Whitney U test of `a` against `b`; see [`mann_whitney_u_with`].
///
/// `None` when either sample is empty or holds a non-finite value (NaN or ±∞).
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    mann_whitney_u_with(a, b, Alternative::TwoSided)
}

/// Mann-Whitney U test of `a` against `b` for the given alternative.
///
/// Uses the normal approximation with tie correction and continuity correction (SciPy's
/// `method="asymptotic", use_continuity=True`; R's `wilcox.test(exact = FALSE, correct = TRUE)`).
/// The approximation is conservative-to-adequate from about 5 values per side (see
/// [`SignificanceCriteria::DEFAULT_MIN_SAMPLES`]). When every value in both samples is equal the
/// test has no information: `z` is 0 and the p-value is 1 for every alternative.
///
/// `None` when either sample is empty or holds a non-finite value (NaN or ±∞).
///
/// Cost: O((n_a + n_b)·log) time for the sort and the shift estimate, O(n_a + n_b) memory — the
/// pairwise differences are never materialised.
pub fn mann_whitney_u_with(a: &[f64], b: &[f64], alternative: Alternative) -> Option<MannWhitney> {
    let a = sorted_finite(a)?;
    let b = sorted_finite(b)?;
    let u = UStatistic::of(&a, &b);
    let deviation = u.u_a - u.mean;

    let (z, p_value) = if u.sigma > 0.0 {
        // Continuity correction toward zero, never past it (U moves in steps of 0.5).
        let corrected = (deviation.abs() - 0.5).max(0.0).copysign(deviation);
        let p = match alternative {
            Alternative::TwoSided => 2.0 * normal_sf((deviation.abs() - 0.5) / u.sigma),
            Alternative::Greater => normal_sf((deviation - 0.5) / u.sigma),
            Alternative::Less => normal_sf((-deviation - 0.5) / u.sigma),
        };
        (corrected / u.sigma, p.clamp(0.0, 1.0))
    } else {
        (0.0, 1.0)
    };

    Some(MannWhitney {
        n_a: a.len(),
        n_b: b.len(),
        u_a: u.u_a,
        u_b: u.pairs - u.u_a,
        z,
        p_value,
        alternative,
        shift: median_pairwise_difference(&a, &b)?,
    })
}

/// Hodges-Lehmann estimate of the shift of `a` relative to `b`: the median of all pairwise
/// differences `a_i − b_j` (the mean of the two middle ones when `n_a·n_b` is even).
///
/// `None` when either sample is empty or holds a non-finite value.
pub fn hodges_lehmann_shift(a: &[f64], b: &[f64]) -> Option<f64> {
    median_pairwise_difference(&sorted_finite(a)?, &sorted_finite(b)?)
}

/// A confidence interval for the location shift of `a` relative to `b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShiftInterval {
    /// Lower bound, in the units of the samples.
    pub lower: f64,
    /// Upper bound, in the units of the samples.
    pub upper: f64,
    /// Nominal confidence level, e.g. 0.95.
    pub confidence: f64,
}

impl ShiftInterval {
    /// Whether the interval contains `value` (bounds included).
    pub fn contains(&self, value: f64) -> bool {
        self.lower <= value && value <= self.upper
    }
}

/// Two-sided confidence interval for the Hodges-Lehmann shift of `a` relative to `b`, by
/// inverting the Mann-Whitney test (Lehmann 1963; Hollander & Wolfe, *Nonparametric Statistical
/// Methods*, §4.3).
///
/// With `D(1) ≤ … ≤ D(n_a·n_b)` the sorted pairwise differences `a_i − b_j`, the interval is
/// `[D(k), D(n_a·n_b + 1 − k)]` where `k = ⌊n_a·n_b/2 + 1/2 − z·σ⌋`, `z` is the upper
/// `(1 − confidence)/2` normal quantile and `σ` the tie-corrected standard deviation of U; the
/// 1/2 is the continuity correction. For small untied samples this `k` agrees with the exact
/// tables (e.g. `k = 3` for 5 + 5 values and `k = 2` for 5 + 4 values at 95%).
///
/// `None` when `confidence` is not strictly between 0 and 1, either sample is empty or holds a
/// non-finite value, or the samples are too small to reach that confidence (`k < 1`; e.g. fewer
/// than 4 + 4 values at 95%).
pub fn shift_confidence_interval(a: &[f64], b: &[f64], confidence: f64) -> Option<ShiftInterval> {
    let in_range = confidence > 0.0 && confidence < 1.0; // false for NaN
    if !in_range {
        return None;
    }
    let a = sorted_finite(a)?;
    let b = sorted_finite(b)?;
    let u = UStatistic::of(&a, &b);
    let z = normal_upper_quantile((1.0 - confidence) / 2.0);
    let k = (u.mean + 0.5 - z * u.sigma).floor();
    if k < 1.0 {
        return None;
    }
    // k ≤ ⌊n_a·n_b/2 + 1/2⌋, so k ≤ n_a·n_b + 1 − k and the conversion is exact.
    let k = k as usize;
    let pairs = a.len() * b.len();
    Some(ShiftInterval {
        lower: kth_pairwise_difference(&a, &b, k)?,
        upper: kth_pairwise_difference(&a, &b, pairs + 1 - k)?,
        confidence,
    })
}

/// Which way a significant difference goes, for `a` relative to `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a` is lower than `b`.
    Lower,
    /// `a` is higher than `b`.
    Higher,
}

/// The outcome of comparing `a` with `b` under some [`SignificanceCriteria`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Significance {
    /// The p-value is below alpha: `a` differs from `b` in `direction`.
    Significant {
        /// Which way `a` differs from `b`.
        direction: Direction,
    },
    /// Enough data, but no significant difference in the tested direction. An A/A comparison
    /// (identical variants) should land here.
    NotSignificant,
    /// A sample has fewer values than the criteria's minimum; the test would say too little.
    TooFewSamples,
    /// A sample holds a non-finite value (NaN or ±∞), so no test was run. Filter or repair the
    /// data first (Prometheus yields NaN for 0/0 ratios).
    InvalidSamples,
}

impl Significance {
    /// Whether the difference is significant, in either direction.
    pub fn is_significant(&self) -> bool {
        matches!(self, Significance::Significant { .. })
    }
}

/// When a Mann-Whitney result counts as significant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignificanceCriteria {
    /// Significance level: a p-value strictly below it is significant. Meant to lie in (0, 1).
    pub alpha: f64,
    /// Minimum number of values in each sample; fewer gives [`Significance::TooFewSamples`].
    pub min_samples: usize,
}

impl SignificanceCriteria {
    /// The conventional 5% significance level.
    pub const DEFAULT_ALPHA: f64 = 0.05;

    /// At least 5 values per side. With fewer, the test can barely or never reach 0.05: even
    /// completely separated 3 + 3 samples give p ≈ 0.081 (exact p = 0.1), 4 + 4 give p ≈ 0.030.
    /// At 5 + 5, complete separation gives p ≈ 0.012 (exact 0.0079), so a real difference can
    /// show, while the normal approximation stays conservative there. Prefer 10+ per side when
    /// the experiment can afford it: power grows quickly with sample size.
    pub const DEFAULT_MIN_SAMPLES: usize = 5;

    /// Classifies a finished test. The direction comes from the test's alternative: `Less` can
    /// only be significantly lower, `Greater` only higher, and `TwoSided` goes by the sign of `z`.
    pub fn classify(&self, test: &MannWhitney) -> Significance {
        if test.n_a < self.min_samples || test.n_b < self.min_samples {
            return Significance::TooFewSamples;
        }
        let below_alpha = test.p_value < self.alpha; // false for NaN alpha: never significant
        if !below_alpha {
            return Significance::NotSignificant;
        }
        let direction = match test.alternative {
            Alternative::Less => Direction::Lower,
            Alternative::Greater => Direction::Higher,
            Alternative::TwoSided if test.z < 0.0 => Direction::Lower,
            Alternative::TwoSided if test.z > 0.0 => Direction::Higher,
            Alternative::TwoSided => return Significance::NotSignificant,
        };
        Significance::Significant { direction }
    }

    /// Tests `a` against `b` for `alternative` and classifies the result. Sample sizes are
    /// checked first, so an empty sample is [`Significance::TooFewSamples`]; a non-finite value
    /// is [`Significance::InvalidSamples`]. Use [`mann_whitney_u_with`] and
    /// [`SignificanceCriteria::classify`] when the p-value is needed too.
    pub fn classify_samples(&self, a: &[f64], b: &[f64], alternative: Alternative) -> Significance {
        if a.len() < self.min_samples.max(1) || b.len() < self.min_samples.max(1) {
            return Significance::TooFewSamples;
        }
        match mann_whitney_u_with(a, b, alternative) {
            Some(test) => self.classify(&test),
            None => Significance::InvalidSamples,
        }
    }
}

impl Default for SignificanceCriteria {
    fn default() -> Self {
        SignificanceCriteria {
            alpha: Self::DEFAULT_ALPHA,
            min_samples: Self::DEFAULT_MIN_SAMPLES,
        }
    }
}

/// Descriptive statistics of one sample, for reports and the noise check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of values.
    pub count: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (divisor `count − 1`); 0 for a single value.
    pub std_dev: f64,
    /// Smallest value.
    pub min: f64,
    /// Median (the mean of the two middle values for an even count).
    pub median: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises `xs`; `None` when it is empty or holds a non-finite value.
    pub fn of(xs: &[f64]) -> Option<Summary> {
        let sorted = sorted_finite(xs)?;
        let count = sorted.len();
        let n = count as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        // Two-pass variance: no cancellation from subtracting large sums.
        let std_dev = if count > 1 {
            (sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let middle = count / 2;
        let median = if count % 2 == 1 {
            sorted[middle]
        } else {
            f64::midpoint(sorted[middle - 1], sorted[middle])
        };
        Some(Summary {
            count,
            mean,
            std_dev,
            min: sorted[0],
            median,
            max: sorted[count - 1],
        })
    }

    /// Coefficient of variation `std_dev / |mean|`: the spread relative to the level, unitless.
    /// `None` with fewer than 2 values, a zero mean, or a result that is not finite.
    pub fn coefficient_of_variation(&self) -> Option<f64> {
        if self.count < 2 || self.mean == 0.0 {
            return None;
        }
        Some(self.std_dev / self.mean.abs()).filter(|cv| cv.is_finite())
    }
}

/// Coefficient of variation of `xs` (sample standard deviation over |mean|), the noise check for
/// a variant's measurements: a steady rate typically sits well below 0.1, while values above
/// ~0.5 mean the series is dominated by noise or a trend and a verdict on it is shaky.
///
/// `None` when `xs` has fewer than 2 values, holds a non-finite value, or has a zero mean.
pub fn coefficient_of_variation(xs: &[f64]) -> Option<f64> {
    Summary::of(xs)?.coefficient_of_variation()
}

/// Upper tail of the standard normal distribution, `P(Z > z)`, accurate in relative terms also
/// deep in the tail: [`erfc`] is good to ~1e-15, and rounding `z/√2` adds about `z²·1e-16`
/// (≈1e-14 at z = 8, ≈1e-13 at z = 30).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / SQRT_2)
}

/// Standard normal distribution function, `P(Z ≤ z)`; as accurate as [`normal_sf`]`(−z)`.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / SQRT_2)
}

/// Complementary error function `erfc(x) = 1 − erf(x)`.
///
/// W. J. Cody's rational Chebyshev approximations ("Rational Chebyshev approximations for the
/// error function", Math. Comp. 23 (1969) 631–637), as in his public-domain SPECFUN routine
/// `CALERF` (netlib, 1990), on the three intervals |x| ≤ 0.46875, ≤ 4 and > 4. The
/// approximations themselves are good to better than 1e-18; in `f64` the result is within a few
/// units in the last place, i.e. about 1e-15 *relative* error even where erfc is tiny — which is
/// what keeps small p-values trustworthy. The tests check it against `scipy.special.erfc`.
/// Underflows to 0 for x > 26.543 (erfc(26.543) ≈ 1e-308); NaN stays NaN.
pub fn erfc(x: f64) -> f64 {
    /// Boundary of the first interval, where erf itself is approximated.
    const THRESHOLD: f64 = 0.46875;
    /// Below this |x|, x² is negligible against the coefficients.
    const X_SMALL: f64 = 1.11e-16;
    /// Above this, erfc(x) underflows in `f64`.
    const X_BIG: f64 = 26.543;
    /// 1/√π.
    const FRAC_1_SQRT_PI: f64 = FRAC_2_SQRT_PI / 2.0;

    if x.is_nan() {
        return x;
    }
    let y = x.abs();
    if y <= THRESHOLD {
        let ysq = if y > X_SMALL { y * y } else { 0.0 };
        let mut num = ERF_A[4] * ysq;
        let mut den = ysq;
        for (a, b) in ERF_A[..3].iter().zip(&ERF_B[..3]) {
            num = (num + a) * ysq;
            den = (den + b) * ysq;
        }
        return 1.0 - x * (num + ERF_A[3]) / (den + ERF_B[3]);
    }

    // erfc(y) = exp(−y²)·R(y) with R a rational function on each interval.
    let rational = if y <= 4.0 {
        let mut num = ERFC_C[8] * y;
        let mut den = y;
        for (c, d) in ERFC_C[..7].iter().zip(&ERFC_D[..7]) {
            num = (num + c) * y;
            den = (den + d) * y;
        }
        (num + ERFC_C[7]) / (den + ERFC_D[7])
    } else if y < X_BIG {
        let ysq = 1.0 / (y * y);
        let mut num = ERFC_P[5] * ysq;
        let mut den = ysq;
        for (p, q) in ERFC_P[..4].iter().zip(&ERFC_Q[..4]) {
            num = (num + p) * ysq;
            den = (den + q) * ysq;
        }
        (FRAC_1_SQRT_PI - ysq * (num + ERFC_P[4]) / (den + ERFC_Q[4])) / y
    } else {
        return if x < 0.0 { 2.0 } else { 0.0 };
    };
    // exp(−y²) as exp(−t²)·exp(−(y−t)(y+t)) with t = y rounded down to 1/16: t² is exact, so
    // the rounding error of y² is not magnified by the exponential.
    let t = (y * 16.0).trunc() / 16.0;
    let upper = (-t * t).exp() * (-(y - t) * (y + t)).exp() * rational;
    if x < 0.0 { 2.0 - upper } else { upper }
}

// Cody's coefficients, verbatim from CALERF so they can be checked against the source; they
// carry more digits than an f64 holds.
#[allow(clippy::excessive_precision)]
const ERF_A: [f64; 5] = [
    3.16112374387056560e00,
    1.13864154151050156e02,
    3.77485237685302021e02,
    3.20937758913846947e03,
    1.85777706184603153e-1,
];
#[allow(clippy::excessive_precision)]
const ERF_B: [f64; 4] = [
    2.36012909523441209e01,
    2.44024637934444173e02,
    1.28261652607737228e03,
    2.84423683343917062e03,
];
#[allow(clippy::excessive_precision)]
const ERFC_C: [f64; 9] = [
    5.64188496988670089e-1,
    8.88314979438837594e00,
    6.61191906371416295e01,
    2.98635138197400131e02,
    8.81952221241769090e02,
    1.71204761263407058e03,
    2.05107837782607147e03,
    1.23033935479799725e03,
    2.15311535474403846e-8,
];
#[allow(clippy::excessive_precision)]
const ERFC_D: [f64; 8] = [
    1.57449261107098347e01,
    1.17693950891312499e02,
    5.37181101862009858e02,
    1.62138957456669019e03,
    3.29079923573345963e03,
    4.36261909014324716e03,
    3.43936767414372164e03,
    1.23033935480374942e03,
];
#[allow(clippy::excessive_precision)]
const ERFC_P: [f64; 6] = [
    3.05326634961232344e-1,
    3.60344899949804439e-1,
    1.25781726111229246e-1,
    1.60837851487422766e-2,
    6.58749161529837803e-4,
    1.63153871373020978e-2,
];
#[allow(clippy::excessive_precision)]
const ERFC_Q: [f64; 5] = [
    2.56852019228982242e00,
    1.87295284992346047e00,
    5.27905102951428412e-1,
    6.05183413124413191e-2,
    2.33520497626869185e-3,
];

/// The `z` with `normal_sf(z) = q`, for `q` in (0, 1/2]. Bisection on [0, 40]: slow-ish (~100
/// evaluations) but obviously correct, and only used to size confidence intervals.
fn normal_upper_quantile(q: f64) -> f64 {
    let (mut lo, mut hi) = (0.0_f64, 40.0_f64);
    loop {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            return mid;
        }
        if normal_sf(mid) > q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
}

/// U of `a` with its null mean and tie-corrected standard deviation. Inputs sorted ascending.
struct UStatistic {
    /// `n_a·n_b`.
    pairs: f64,
    /// U of `a`.
    u_a: f64,
    /// Mean of U under the null hypothesis, `n_a·n_b/2`.
    mean: f64,
    /// Standard deviation of U under the null hypothesis, corrected for ties; 0 when every value
    /// of both samples is the same.
    sigma: f64,
}

impl UStatistic {
    fn of(a: &[f64], b: &[f64]) -> UStatistic {
        // Merge the two sorted samples, giving each group of equal values its average rank.
        // Ranks are kept doubled so they stay integers, and the tie term Σ(t³ − t) is summed
        // exactly, so "all values tied" yields exactly zero variance.
        let (mut i, mut j) = (0, 0);
        let mut rank_sum_a_doubled: u128 = 0;
        let mut tie_term: u128 = 0;
        loop {
            let value = match (a.get(i), b.get(j)) {
                (Some(&x), Some(&y)) => x.min(y),
                (Some(&x), None) => x,
                (None, Some(&y)) => y,
                (None, None) => break,
            };
            let in_a = a[i..].iter().take_while(|&&x| x == value).count();
            let in_b = b[j..].iter().take_while(|&&y| y == value).count();
            // The group takes ranks start+1 ..= start+t; twice their average is 2·start + t + 1.
            let start = (i + j) as u128;
            let t = (in_a + in_b) as u128;
            rank_sum_a_doubled += in_a as u128 * (2 * start + t + 1);
            tie_term += t * t * t - t;
            i += in_a;
            j += in_b;
        }

        let (n_a, n_b) = (a.len() as u128, b.len() as u128);
        let n = n_a + n_b;
        let u_a = (rank_sum_a_doubled - n_a * (n_a + 1)) as f64 / 2.0;
        let pairs = (n_a * n_b) as f64;
        // Var(U) = n_a·n_b/12 · ((n + 1) − Σ(t³ − t)/(n(n − 1)))
        //        = n_a·n_b · (n³ − n − Σ(t³ − t)) / (12·n·(n − 1)).
        let untied = (n * n * n - n - tie_term) as f64;
        let variance = pairs * untied / (12 * n * (n - 1)) as f64;
        UStatistic {
            pairs,
            u_a,
            mean: pairs / 2.0,
            sigma: variance.sqrt(),
        }
    }
}

/// `xs` sorted ascending, with −0.0 folded into +0.0; `None` when empty or not all finite.
fn sorted_finite(xs: &[f64]) -> Option<Vec<f64>> {
    if xs.is_empty() || !xs.iter().all(|x| x.is_finite()) {
        return None;
    }
    let mut sorted: Vec<f64> = xs.iter().map(|x| x + 0.0).collect();
    sorted.sort_by(f64::total_cmp);
    Some(sorted)
}

/// Median of the pairwise differences `a_i − b_j`; inputs sorted ascending and non-empty.
fn median_pairwise_difference(a: &[f64], b: &[f64]) -> Option<f64> {
    let pairs = a.len() * b.len();
    if pairs % 2 == 1 {
        kth_pairwise_difference(a, b, pairs.div_ceil(2))
    } else {
        Some(f64::midpoint(
            kth_pairwise_difference(a, b, pairs / 2)?,
            kth_pairwise_difference(a, b, pairs / 2 + 1)?,
        ))
    }
}

/// The `k`-th smallest (1-based) of the `n_a·n_b` pairwise differences `a_i − b_j`, for `a` and
/// `b` sorted ascending and finite; `None` when `k` is out of range.
///
/// Binary search over the `f64` values themselves (through an order-preserving map to `u64`),
/// counting differences at or below a candidate in O(n_a + n_b): at most 64 rounds, no
/// `n_a·n_b` allocation. The result is exactly one of the computed differences, because the
/// count only changes at those values.
fn kth_pairwise_difference(a: &[f64], b: &[f64], k: usize) -> Option<f64> {
    if k == 0 || k > a.len() * b.len() {
        return None;
    }
    let mut lo = order_key(a.first()? - b.last()?);
    let mut hi = order_key(a.last()? - b.first()?);
    // Invariant: the answer's key lies in lo..=hi. Every key in that range is a non-NaN f64.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if count_differences_at_most(a, b, from_order_key(mid)) >= k {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(from_order_key(lo))
}

/// How many computed differences `a_i − b_j` are ≤ `t`. For each `a_i` they form a suffix of the
/// sorted `b` (rounding is monotonic), and that suffix only shrinks as `a_i` grows.
fn count_differences_at_most(a: &[f64], b: &[f64], t: f64) -> usize {
    let mut first = 0;
    let mut count = 0;
    for &x in a {
        while first < b.len() && x - b[first] > t {
            first += 1;
        }
        count += b.len() - first;
    }
    count
}

/// Maps non-NaN `f64`s to `u64`s with the same order.
fn order_key(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

/// Inverse of [`order_key`].
fn from_order_key(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    })
}

#[cfg(test)]
mod tests {
    //! Reference numbers were computed with SciPy 1.17.1 / NumPy in a throwaway virtualenv
    //! (not part of the project), e.g.
    //! `scipy.stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic",
    //! use_continuity=True).pvalue`, `scipy.special.erfc(x)`, `scipy.stats.norm.sf(z)`, and
    //! `numpy.median(numpy.subtract.outer(a, b))` for the Hodges-Lehmann shift.

    use super::*;

    /// Relative closeness, for values that span many orders of magnitude.
    fn assert_close(actual: f64, expected: f64, rel: f64) {
        let scale = expected.abs().max(f64::MIN_POSITIVE);
        assert!(
            (actual - expected).abs() <= rel * scale,
            "{actual:e} is not within {rel:e} (relative) of {expected:e}"
        );
    }

    const CLASSIC_A: [f64; 5] = [19.0, 22.0, 16.0, 29.0, 24.0];
    const CLASSIC_B: [f64; 4] = [20.0, 11.0, 17.0, 12.0];

    #[test]
    fn classic_example_matches_scipy_and_hand_computation() {
        // SciPy's documentation example. By hand: the pooled order is
        // 11b 12b 16a 17b 19a 20b 22a 24a 29a, so R_a = 3+5+7+8+9 = 32 and
        // U_a = 32 − 5·6/2 = 17, U_b = 20 − 17 = 3. Under H0, mean = 20/2 = 10 and
        // Var = 5·4·10/12 = 16.667 (no ties), σ = 4.0825. z = (17 − 10 − 0.5)/4.0825 = 1.5922,
        // two-sided p = 2·P(Z > 1.5922) = 0.11135; SciPy: 0.11134688653314041.
        let test = mann_whitney_u(&CLASSIC_A, &CLASSIC_B).expect("valid samples");
        assert_eq!((test.n_a, test.n_b), (5, 4));
        assert_eq!(test.u_a, 17.0);
        assert_eq!(test.u_b, 3.0);
        assert_close(test.z, 6.5 / (50.0_f64 / 3.0).sqrt(), 1e-15);
        assert_close(test.p_value, 0.11134688653314041, 1e-12);
        assert_eq!(test.alternative, Alternative::TwoSided);
        // Median of the 20 differences a_i − b_j (NumPy): 7.
        assert_eq!(test.shift, 7.0);

        let greater = mann_whitney_u_with(&CLASSIC_A, &CLASSIC_B, Alternative::Greater).unwrap();
        assert_close(greater.p_value, 0.055673443266570206, 1e-12);
        let less = mann_whitney_u_with(&CLASSIC_A, &CLASSIC_B, Alternative::Less).unwrap();
        assert_close(less.p_value, 0.9669037101389033, 1e-12);
        assert_eq!(less.u_a, 17.0, "U does not depend on the alternative");
    }

    #[test]
    fn ties_use_average_ranks_and_the_tie_corrected_variance() {
        // Pooled ties: 2 (×3), 3 (×4), 4 (×3), 5 (×2). SciPy: U_a = 15.5,
        // p = 0.15768338784575409 (two-sided), 0.07884169392287704 (less),
        // 0.9370718041351203 (greater). Shift (NumPy median of 56 differences): −1.
        let a = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 7.0];
        let b = [2.0, 3.0, 4.0, 4.0, 5.0, 5.0, 6.0];
        let two_sided = mann_whitney_u(&a, &b).unwrap();
        assert_eq!(two_sided.u_a, 15.5);
        assert_eq!(two_sided.u_b, 40.5);
        assert!(two_sided.z < 0.0);
        assert_close(two_sided.p_value, 0.15768338784575409, 1e-12);
        assert_eq!(two_sided.shift, -1.0);
        let less = mann_whitney_u_with(&a, &b, Alternative::Less).unwrap();
        assert_close(less.p_value, 0.07884169392287704, 1e-12);
        let greater = mann_whitney_u_with(&a, &b, Alternative::Greater).unwrap();
        assert_close(greater.p_value, 0.9370718041351203, 1e-12);
    }

    #[test]
    fn identical_samples_are_not_significantly_different() {
        // A/A: U_a = 32 = n_a·n_b/2 exactly. SciPy: two-sided p = 1.0,
        // one-sided p = 0.5211895779953962 (the continuity correction pushes it past 1/2).
        let a = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        let test = mann_whitney_u(&a, &a).unwrap();
        assert_eq!(test.u_a, 32.0);
        assert_eq!(test.z, 0.0);
        assert_eq!(test.p_value, 1.0);
        assert_eq!(test.shift, 0.0);
        for alternative in [Alternative::Less, Alternative::Greater] {
            let one_sided = mann_whitney_u_with(&a, &a, alternative).unwrap();
            assert_close(one_sided.p_value, 0.5211895779953962, 1e-12);
        }
        let criteria = SignificanceCriteria::default();
        assert_eq!(criteria.classify(&test), Significance::NotSignificant);
        assert_eq!(
            criteria.classify_samples(&a, &a, Alternative::Less),
            Significance::NotSignificant
        );
    }

    #[test]
    fn all_values_equal_carries_no_information() {
        // Zero variance: SciPy gives p = 1.0 (U = 21 = 6·7/2).
        let a = [2.0; 6];
        let b = [2.0; 7];
        for alternative in [
            Alternative::TwoSided,
            Alternative::Less,
            Alternative::Greater,
        ] {
            let test = mann_whitney_u_with(&a, &b, alternative).unwrap();
            assert_eq!(test.u_a, 21.0);
            assert_eq!((test.z, test.p_value, test.shift), (0.0, 1.0, 0.0));
        }
        let interval = shift_confidence_interval(&a, &b, 0.95).unwrap();
        assert_eq!((interval.lower, interval.upper), (0.0, 0.0));
    }

    #[test]
    fn completely_separated_samples_are_significant() {
        // a = 1..=10, b = 11..=20. SciPy: U_a = 0, two-sided p = 0.00018267179110955002,
        // less 9.133589555477501e-05, greater 0.9999325785388228. Shift: −10.
        let a: Vec<f64> = (1..=10).map(f64::from).collect();
        let b: Vec<f64> = (11..=20).map(f64::from).collect();
        let test = mann_whitney_u(&a, &b).unwrap();
        assert_eq!((test.u_a, test.u_b), (0.0, 100.0));
        assert_close(test.p_value, 0.00018267179110955002, 1e-12);
        assert_eq!(test.shift, -10.0);
        let less = mann_whitney_u_with(&a, &b, Alternative::Less).unwrap();
        assert_close(less.p_value, 9.133589555477501e-05, 1e-12);
        let greater = mann_whitney_u_with(&a, &b, Alternative::Greater).unwrap();
        assert_close(greater.p_value, 0.9999325785388228, 1e-12);

        let criteria = SignificanceCriteria::default();
        let lower = Significance::Significant {
            direction: Direction::Lower,
        };
        assert_eq!(criteria.classify(&test), lower);
        assert_eq!(criteria.classify(&less), lower);
        assert_eq!(criteria.classify(&greater), Significance::NotSignificant);
        assert_eq!(
            criteria.classify_samples(&b, &a, Alternative::TwoSided),
            Significance::Significant {
                direction: Direction::Higher
            }
        );
    }

    #[test]
    fn tiny_p_values_stay_accurate_in_the_far_tail() {
        // a = 0..200, b = 200..400. SciPy: two-sided 4.830856390397399e-67,
        // less 2.4154281951986995e-67, greater 1.0.
        let a: Vec<f64> = (0..200).map(f64::from).collect();
        let b: Vec<f64> = (200..400).map(f64::from).collect();
        assert_close(
            mann_whitney_u(&a, &b).unwrap().p_value,
            4.830856390397399e-67,
            1e-11,
        );
        let less = mann_whitney_u_with(&a, &b, Alternative::Less).unwrap();
        assert_close(less.p_value, 2.4154281951986995e-67, 1e-11);
        let greater = mann_whitney_u_with(&a, &b, Alternative::Greater).unwrap();
        assert_eq!(greater.p_value, 1.0);
    }

    #[test]
    fn a_cheaper_candidate_is_significantly_lower_than_its_baseline() {
        // Candidate = 0.8 × baseline. SciPy: U_a = 0, less p = 9.031736040376755e-05.
        let baseline = [
            100.0, 104.0, 98.0, 101.0, 99.0, 103.0, 97.0, 102.0, 100.0, 105.0,
        ];
        let candidate: Vec<f64> = baseline.iter().map(|x| x * 0.8).collect();
        let test = mann_whitney_u_with(&candidate, &baseline, Alternative::Less).unwrap();
        assert_eq!(test.u_a, 0.0);
        assert_close(test.p_value, 9.031736040376755e-05, 1e-12);
        assert!(test.shift < 0.0);
        assert_eq!(
            SignificanceCriteria::default().classify(&test),
            Significance::Significant {
                direction: Direction::Lower
            }
        );
    }

    /// Deterministic, unsorted, tie-rich samples with fractional values (exact in binary).
    fn scrambled() -> (Vec<f64>, Vec<f64>) {
        let a = (0..40)
            .map(|i| f64::from(i * 37 % 101) * 0.25 + 3.0)
            .collect();
        let b = (0..35)
            .map(|j| f64::from(j * 53 % 97) * 0.25 + 1.5)
            .collect();
        (a, b)
    }

    #[test]
    fn larger_scrambled_samples_match_scipy() {
        // SciPy: U_a = 844.5, two-sided p = 0.1261641134522095, less 0.9382229562678976,
        // greater 0.06308205672610474. NumPy median of the 1400 differences: 2.75.
        let (a, b) = scrambled();
        let test = mann_whitney_u(&a, &b).unwrap();
        assert_eq!(test.u_a, 844.5);
        assert_close(test.p_value, 0.1261641134522095, 1e-12);
        assert_eq!(test.shift, 2.75);
        let less = mann_whitney_u_with(&a, &b, Alternative::Less).unwrap();
        assert_close(less.p_value, 0.9382229562678976, 1e-12);
        let greater = mann_whitney_u_with(&a, &b, Alternative::Greater).unwrap();
        assert_close(greater.p_value, 0.06308205672610474, 1e-12);
    }

    #[test]
    fn swapping_the_samples_mirrors_the_result() {
        let (a, b) = scrambled();
        for (x, y) in [(&CLASSIC_A[..], &CLASSIC_B[..]), (&a[..], &b[..])] {
            let forward = mann_whitney_u(x, y).unwrap();
            let backward = mann_whitney_u(y, x).unwrap();
            assert_eq!((forward.u_a, forward.u_b), (backward.u_b, backward.u_a));
            assert_eq!(forward.z, -backward.z);
            assert_eq!(forward.p_value, backward.p_value);
            assert_eq!(forward.shift, -backward.shift);
            let less = mann_whitney_u_with(x, y, Alternative::Less).unwrap();
            let greater = mann_whitney_u_with(y, x, Alternative::Greater).unwrap();
            assert_eq!(less.p_value, greater.p_value);
        }
    }

    #[test]
    fn empty_or_non_finite_samples_are_rejected() {
        let ok = [1.0, 2.0, 3.0];
        assert_eq!(mann_whitney_u(&[], &ok), None);
        assert_eq!(mann_whitney_u(&ok, &[]), None);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(mann_whitney_u(&[1.0, bad], &ok), None);
            assert_eq!(mann_whitney_u(&ok, &[bad]), None);
            assert_eq!(hodges_lehmann_shift(&ok, &[bad]), None);
            assert_eq!(shift_confidence_interval(&[bad], &ok, 0.95), None);
            assert_eq!(Summary::of(&[bad]), None);
        }
        let criteria = SignificanceCriteria::default();
        let five = [1.0, 2.0, 3.0, 4.0, 5.0];
        let five_with_nan = [1.0, 2.0, f64::NAN, 4.0, 5.0];
        assert_eq!(
            criteria.classify_samples(&[], &five, Alternative::TwoSided),
            Significance::TooFewSamples
        );
        assert_eq!(
            criteria.classify_samples(&five_with_nan, &five, Alternative::TwoSided),
            Significance::InvalidSamples
        );
    }

    #[test]
    fn too_few_samples_are_never_significant() {
        // Completely separated 4 + 4: p ≈ 0.030 (SciPy 0.03038282197657749) would pass 0.05,
        // but the default minimum is 5 per side.
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let test = mann_whitney_u(&a, &b).unwrap();
        assert_close(test.p_value, 0.03038282197657749, 1e-12);
        let criteria = SignificanceCriteria::default();
        assert_eq!(criteria.classify(&test), Significance::TooFewSamples);
        assert_eq!(
            criteria.classify_samples(&a, &b, Alternative::TwoSided),
            Significance::TooFewSamples
        );
        let lenient = SignificanceCriteria {
            min_samples: 4,
            ..criteria
        };
        assert!(lenient.classify(&test).is_significant());
    }

    #[test]
    fn the_shift_estimate_is_the_median_of_all_pairwise_differences() {
        // Against brute force: materialise every difference, sort, take the median.
        let (a, b) = scrambled();
        let cases: [(&[f64], &[f64]); 4] = [
            (&a, &b),
            (&a[..7], &b[..4]),
            (&[-0.0, 1e308, -1e308], &[-1e308, 0.0]), // overflow to ∞, signed zeros
            (&[0.1, 0.2, 0.3], &[0.3, 0.1]),          // inexact differences
        ];
        for (x, y) in cases {
            let mut differences: Vec<f64> = x
                .iter()
                .flat_map(|xi| y.iter().map(move |yj| xi - yj))
                .collect();
            differences.sort_by(f64::total_cmp);
            let m = differences.len();
            let expected = if m % 2 == 1 {
                differences[m / 2]
            } else {
                f64::midpoint(differences[m / 2 - 1], differences[m / 2])
            };
            assert_eq!(hodges_lehmann_shift(x, y), Some(expected), "{x:?} − {y:?}");
        }
    }

    #[test]
    fn shift_confidence_interval_matches_the_order_statistics() {
        // Expected bounds from NumPy: sorted differences D, k = ⌊mn/2 + 1/2 − z·σ⌋ with
        // z = scipy.stats.norm.isf((1 − c)/2) and σ the tie-corrected sd of U, then
        // (D[k−1], D[mn−k]) zero-based.
        // Classic 5 + 4 at 95%: k = 2 (the exact-table value), interval [−1, 17].
        let classic = shift_confidence_interval(&CLASSIC_A, &CLASSIC_B, 0.95).unwrap();
        assert_eq!((classic.lower, classic.upper), (-1.0, 17.0));
        assert!(classic.contains(7.0) && classic.contains(0.0));
        // 5 + 5 completely separated at 95%: k = 3 (exact table), interval [−8, −2].
        let separated = shift_confidence_interval(
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            &[6.0, 7.0, 8.0, 9.0, 10.0],
            0.95,
        )
        .unwrap();
        assert_eq!((separated.lower, separated.upper), (-8.0, -2.0));
        assert!(!separated.contains(0.0));
        // With ties: k = 11 of 56, interval [−3, 1].
        let tied = shift_confidence_interval(
            &[1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 7.0],
            &[2.0, 3.0, 4.0, 4.0, 5.0, 5.0, 6.0],
            0.95,
        )
        .unwrap();
        assert_eq!((tied.lower, tied.upper), (-3.0, 1.0));
        // Scrambled 40 + 35: k = 515 → [−0.75, 6.25] at 95%; k = 545 → [−0.25, 5.75] at 90%.
        let (a, b) = scrambled();
        let wide = shift_confidence_interval(&a, &b, 0.95).unwrap();
        assert_eq!(
            (wide.lower, wide.upper, wide.confidence),
            (-0.75, 6.25, 0.95)
        );
        let narrow = shift_confidence_interval(&a, &b, 0.90).unwrap();
        assert_eq!((narrow.lower, narrow.upper), (-0.25, 5.75));
    }

    #[test]
    fn shift_confidence_interval_rejects_what_it_cannot_deliver() {
        // 3 + 3 can never reach 95% (k = ⌊4.5 + 0.5 − 1.96·2.29⌋ = 0).
        assert_eq!(
            shift_confidence_interval(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], 0.95),
            None
        );
        for confidence in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            assert_eq!(
                shift_confidence_interval(&CLASSIC_A, &CLASSIC_B, confidence),
                None
            );
        }
        assert_eq!(shift_confidence_interval(&[], &CLASSIC_B, 0.95), None);
    }

    #[test]
    fn erfc_matches_scipy_across_all_three_intervals() {
        // scipy.special.erfc(x).
        let reference = [
            (-3.0, 1.9999779095030015),
            (-1.0, 1.8427007929497148),
            (-0.3, 1.3286267594591274),
            (0.0, 1.0),
            (1e-10, 0.999999999887162),
            (0.2, 0.7772974107895215),
            (0.46875, 0.507386526782062),
            (0.5, 0.4795001221869535),
            (1.0, 0.15729920705028516),
            (2.0, 0.004677734981047266),
            (3.9, 3.479224859723178e-08),
            (4.0, 1.541725790028002e-08),
            (4.5, 1.9661604415428878e-10),
            (6.0, 2.1519736712498913e-17),
            (10.0, 2.0884875837625446e-45),
            (26.0, 5.663192408856145e-296),
        ];
        for (x, expected) in reference {
            assert_close(erfc(x), expected, 1e-14);
        }
        assert_eq!(erfc(27.0), 0.0);
        assert_eq!(erfc(f64::INFINITY), 0.0);
        assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
        assert!(erfc(f64::NAN).is_nan());
    }

    #[test]
    fn normal_tails_match_scipy() {
        // scipy.stats.norm.sf(z). Tolerance 1e-13: rounding z/√2 costs about z²·1e-16.
        let reference = [
            (0.0, 0.5),
            (1.0, 0.15865525393145707),
            (1.959963984540054, 0.025),
            (3.0, 0.0013498980316300933),
            (-2.0, 0.9772498680518208),
            (8.0, 6.22096057427174e-16),
        ];
        for (z, expected) in reference {
            assert_close(normal_sf(z), expected, 1e-13);
            assert_close(normal_cdf(-z), expected, 1e-13);
        }
        // scipy.stats.norm.isf(0.025) = 1.959963984540054.
        assert_close(normal_upper_quantile(0.025), 1.959963984540054, 1e-14);
    }

    #[test]
    fn order_keys_preserve_the_order_of_floats() {
        let ordered = [
            f64::NEG_INFINITY,
            -1e300,
            -1.0,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            5e-324,
            1.0,
            f64::MAX,
            f64::INFINITY,
        ];
        for pair in ordered.windows(2) {
            assert!(order_key(pair[0]) < order_key(pair[1]), "{pair:?}");
        }
        for x in ordered {
            assert_eq!(from_order_key(order_key(x)).to_bits(), x.to_bits());
        }
    }

    #[test]
    fn summary_and_coefficient_of_variation() {
        // mean 5, sample variance 32/7, sd 2.138089935299395 (numpy.std(ddof=1)); median 4.5.
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let summary = Summary::of(&xs).unwrap();
        assert_eq!(summary.count, 8);
        assert_eq!((summary.mean, summary.median), (5.0, 4.5));
        assert_eq!((summary.min, summary.max), (2.0, 9.0));
        assert_close(summary.std_dev, 2.138089935299395, 1e-15);
        assert_close(
            coefficient_of_variation(&xs).unwrap(),
            2.138089935299395 / 5.0,
            1e-15,
        );
        // The CV is scale-free and uses |mean|.
        let scaled: Vec<f64> = xs.iter().map(|x| -1000.0 * x).collect();
        assert_close(
            coefficient_of_variation(&scaled).unwrap(),
            coefficient_of_variation(&xs).unwrap(),
            1e-14,
        );

        let single = Summary::of(&[3.0]).unwrap();
        assert_eq!((single.std_dev, single.median), (0.0, 3.0));
        assert_eq!(single.coefficient_of_variation(), None);
        assert_eq!(coefficient_of_variation(&[-1.0, 1.0]), None, "zero mean");
        assert_eq!(coefficient_of_variation(&[7.0; 4]), Some(0.0));
        assert_eq!(coefficient_of_variation(&[]), None);
    }
}
