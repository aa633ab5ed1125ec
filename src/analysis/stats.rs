//! Statistics behind the experiment verdict (pure, std-only): an autocorrelation-corrected
//! Student-t test of a per-step paired effect with its confidence bounds, the Hodges-Lehmann
//! estimate reported beside it, Student's t distribution, and noise summaries.
//!
//! Why this method (issue 13, DESIGN §6 "Honest confidence"): both variants are measured at the
//! same instants under the same load, so the verdict compares them *per step* (one paired value
//! per step: the candidate's relative reduction against the baseline at that step), which removes
//! the load both share. The steps of one run are not independent: process populations, the
//! collectors' misses and overlapping count ranges make neighbouring steps alike. A test that
//! treats `n` correlated steps as `n` independent observations is overconfident, so
//! [`autocorrelation_corrected_test`] counts them as an *effective* sample size `n / τ`, with `τ`
//! the larger of the AR(1) figure `(1 + ρ)/(1 − ρ)` (ρ the bias-corrected lag-1
//! autocorrelation) and Geyer's integrated autocorrelation time, which also sees slow drift under
//! step-to-step jitter. The p-value and bounds are Student-t's on the mean with `n_eff − 1`
//! degrees of freedom (at least 1).
//!
//! The bounds are about the mean, not the Hodges-Lehmann estimate: per-step differences are
//! counts of series, often exactly 0 with occasional ±1 process, and on such data the median of
//! the Walsh averages jumps between a few values while its large-sample standard error assumes a
//! continuous distribution; the mean's bounds are the ones whose coverage is checked. The
//! Hodges-Lehmann estimate is still reported as a robust effect size.
//! The tests check the bounds' coverage on independent and on strongly autocorrelated (AR(1),
//! ρ = 0.9) data over many seeds.

use std::f64::consts::PI;

/// Largest lag-1 autocorrelation the effective sample size is computed with: beyond it a run
/// carries next to no independent information (n_eff < n/199) and the bound keeps the arithmetic
/// finite.
pub const MAX_AUTOCORRELATION: f64 = 0.99;

/// An autocorrelation-corrected, one-sided test of "the location of `xs` is greater than a margin",
/// with its estimate and confidence bounds; see [`autocorrelation_corrected_test`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocationTest {
    /// Number of values.
    pub n: usize,
    /// The mean: the estimate the p-value and the bounds are about.
    pub mean: f64,
    /// Hodges-Lehmann estimate of the location (the median of the Walsh averages): a robust
    /// effect size reported beside the mean; the two agree for symmetric noise.
    pub hodges_lehmann: f64,
    /// Standard error of the mean, corrected for autocorrelation: `s / √n_eff`.
    pub std_error: f64,
    /// Lag-1 autocorrelation used: the sample value, corrected for its small-sample bias,
    /// clamped to `[0, MAX_AUTOCORRELATION]` (negative correlation is never credited).
    pub autocorrelation: f64,
    /// How many independent values the correlated ones are worth: `n / τ`, with `τ` the larger
    /// of the AR(1) figure `(1 + ρ)/(1 − ρ)` and [`integrated_autocorrelation_time`].
    pub effective_samples: f64,
    /// Degrees of freedom of the t distribution: `max(n_eff − 1, 1)`.
    pub degrees_of_freedom: f64,
    /// One-sided p-value of "location ≤ margin" against "location > margin".
    pub p_value: f64,
    /// The margin the p-value tests against.
    pub margin: f64,
    /// Lower confidence bound at level `1 − alpha`: the location is at least this with that
    /// confidence.
    pub lower: f64,
    /// Upper confidence bound at level `1 − alpha`; `[lower, upper]` is a two-sided interval at
    /// level `1 − 2·alpha`.
    pub upper: f64,
    /// The `alpha` the bounds were computed for.
    pub alpha: f64,
}

/// Tests whether the mean of the serially correlated values `xs` (in time order) is above
/// `margin`, correcting for autocorrelation through the effective sample size (see the module
/// doc). `p_value < alpha` exactly when `lower > margin`.
///
/// With no spread at all (every value equal) the data carry no noise estimate: the estimate is
/// the value, both bounds equal it and the p-value is 0 when it is above the margin, 1 otherwise.
///
/// `None` with fewer than 2 values, a non-finite value or margin, or `alpha` outside (0, 0.5).
pub fn autocorrelation_corrected_test(xs: &[f64], margin: f64, alpha: f64) -> Option<LocationTest> {
    let alpha_ok = alpha > 0.0 && alpha < 0.5; // false for NaN
    if xs.len() < 2 || !alpha_ok || !margin.is_finite() {
        return None;
    }
    let summary = Summary::of(xs)?;
    // Equal values: their mean is the value (a computed mean may be off in the last bit).
    let mean = if summary.min == summary.max {
        summary.min
    } else {
        summary.mean
    };
    let hodges_lehmann = hodges_lehmann(xs)?;
    let n = xs.len();
    let autocorrelation = corrected_autocorrelation(xs)?;
    let effective_samples = effective_sample_size(n, autocorrelation)
        .min(n as f64 / integrated_autocorrelation_time(xs)?);
    let degrees_of_freedom = (effective_samples - 1.0).max(1.0);
    // Equal values have no spread, though their computed standard deviation may not be 0.
    let spread = if summary.min == summary.max {
        0.0
    } else {
        summary.std_dev
    };
    let std_error = spread / effective_samples.sqrt();
    let (p_value, half_width) = if std_error > 0.0 {
        (
            student_t_sf((mean - margin) / std_error, degrees_of_freedom),
            student_t_upper_quantile(alpha, degrees_of_freedom) * std_error,
        )
    } else {
        (if mean > margin { 0.0 } else { 1.0 }, 0.0)
    };
    Some(LocationTest {
        n,
        mean,
        hodges_lehmann,
        std_error,
        autocorrelation,
        effective_samples,
        degrees_of_freedom,
        p_value,
        lower: mean - half_width,
        upper: mean + half_width,
        margin,
        alpha,
    })
}

/// Lag-1 sample autocorrelation `Σ(x_t − x̄)(x_{t+1} − x̄) / Σ(x_t − x̄)²` of `xs` in time order;
/// 0 when the values do not vary. `None` with fewer than 2 values or a non-finite one.
pub fn lag1_autocorrelation(xs: &[f64]) -> Option<f64> {
    let Summary { mean, min, max, .. } = Summary::of(xs)?;
    if xs.len() < 2 {
        return None;
    }
    let denominator: f64 = xs.iter().map(|x| (x - mean).powi(2)).sum();
    if min == max || denominator <= 0.0 {
        return Some(0.0);
    }
    let numerator: f64 = xs.windows(2).map(|w| (w[0] - mean) * (w[1] - mean)).sum();
    Some(numerator / denominator)
}

/// The lag-1 autocorrelation the effective sample size uses: the sample value plus the first
/// order correction of its downward bias for an AR(1) process with unknown mean, `(1 + 3ρ)/n`
/// (Marriott & Pope 1954; Kendall 1954), clamped to `[0, MAX_AUTOCORRELATION]`.
pub fn corrected_autocorrelation(xs: &[f64]) -> Option<f64> {
    let rho = lag1_autocorrelation(xs)?;
    let corrected = rho + (1.0 + 3.0 * rho) / xs.len() as f64;
    Some(corrected.clamp(0.0, MAX_AUTOCORRELATION))
}

/// Geyer's initial positive sequence estimate of the integrated autocorrelation time
/// `τ = 1 + 2·Σ_{k≥1} ρ_k` of `xs` in time order (Geyer 1992, as Stan computes its effective
/// sample size): sums of adjacent sample autocorrelations `ρ_{2m} + ρ_{2m+1}`, cut at the first
/// one that is not positive and made non-increasing. Unlike the AR(1) figure it also sees slow
/// correlation hidden under step-to-step noise (a persistent drift plus jitter has a small lag-1
/// autocorrelation but a long memory). At least 1; 1 when the values do not vary. `None` with
/// fewer than 2 values or a non-finite one.
pub fn integrated_autocorrelation_time(xs: &[f64]) -> Option<f64> {
    let Summary { mean, min, max, .. } = Summary::of(xs)?;
    if xs.len() < 2 {
        return None;
    }
    let denominator: f64 = xs.iter().map(|x| (x - mean).powi(2)).sum();
    if min == max || denominator <= 0.0 {
        return Some(1.0);
    }
    let rho = |lag: usize| -> f64 {
        xs.iter()
            .zip(&xs[lag..])
            .map(|(a, b)| (a - mean) * (b - mean))
            .sum::<f64>()
            / denominator
    };
    let mut sum = 0.0;
    let mut previous = f64::INFINITY;
    let mut m = 0;
    while 2 * m + 1 < xs.len() {
        let pair = (rho(2 * m) + rho(2 * m + 1)).min(previous);
        if pair <= 0.0 {
            break;
        }
        sum += pair;
        previous = pair;
        m += 1;
    }
    Some((2.0 * sum - 1.0).max(1.0))
}

/// How many independent values `n` values of an AR(1) process with lag-1 autocorrelation `rho`
/// are worth for estimating its mean: `n·(1 − ρ)/(1 + ρ)` (`rho` clamped to
/// `[0, MAX_AUTOCORRELATION]`).
pub fn effective_sample_size(n: usize, rho: f64) -> f64 {
    let rho = if rho.is_nan() {
        MAX_AUTOCORRELATION
    } else {
        rho.clamp(0.0, MAX_AUTOCORRELATION)
    };
    n as f64 * (1.0 - rho) / (1.0 + rho)
}

/// One-sample Hodges-Lehmann estimate: the median of the `n(n+1)/2` Walsh averages
/// `(x_i + x_j)/2`, `i ≤ j` (the mean of the two middle ones when their number is even).
/// O(n log n) time and O(n) memory: the averages are never materialised.
///
/// `None` when `xs` is empty or holds a non-finite value.
pub fn hodges_lehmann(xs: &[f64]) -> Option<f64> {
    let sorted = sorted_finite(xs)?;
    let n = sorted.len();
    let pairs = n * (n + 1) / 2;
    if pairs % 2 == 1 {
        kth_walsh_average(&sorted, pairs.div_ceil(2))
    } else {
        Some(f64::midpoint(
            kth_walsh_average(&sorted, pairs / 2)?,
            kth_walsh_average(&sorted, pairs / 2 + 1)?,
        ))
    }
}

/// The `k`-th smallest (1-based) Walsh average of `sorted` (ascending, finite, non-empty); `None`
/// when `k` is out of range. Binary search over the `f64` values through an order-preserving map
/// to `u64` (at most 64 rounds of an O(n) count), so the result is exactly one of the averages.
fn kth_walsh_average(sorted: &[f64], k: usize) -> Option<f64> {
    let n = sorted.len();
    if k == 0 || k > n * (n + 1) / 2 {
        return None;
    }
    let mut lo = order_key(*sorted.first()?);
    let mut hi = order_key(*sorted.last()?);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if count_walsh_at_most(sorted, from_order_key(mid)) >= k {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(from_order_key(lo))
}

/// How many Walsh averages `midpoint(x_i, x_j)`, `i ≤ j`, are ≤ `t`. For each `i` they form a
/// prefix of the sorted values, and that prefix only shrinks as `x_i` grows (the midpoint is
/// monotonic in each argument).
fn count_walsh_at_most(sorted: &[f64], t: f64) -> usize {
    let mut end = sorted.len();
    let mut count = 0;
    for (i, &x) in sorted.iter().enumerate() {
        while end > 0 && f64::midpoint(x, sorted[end - 1]) > t {
            end -= 1;
        }
        if end <= i {
            break;
        }
        count += end - i;
    }
    count
}

/// Upper tail of Student's t distribution with `df` (> 0, not necessarily whole) degrees of
/// freedom, `P(T > t)`: `I_{df/(df+t²)}(df/2, 1/2) / 2` for `t ≥ 0`, mirrored below 0.
pub fn student_t_sf(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return if t > 0.0 { 0.0 } else { 1.0 };
    }
    let x = df / (df + t * t);
    let tail = 0.5 * regularized_incomplete_beta(0.5 * df, 0.5, x);
    if t >= 0.0 { tail } else { 1.0 - tail }
}

/// The `t` with `student_t_sf(t, df) = q`, for `q` in (0, 1/2] and `df` > 0. Bisection on the
/// order keys of [0, 1e12]: obviously correct and exact to the last bit, and only used to size
/// intervals.
pub fn student_t_upper_quantile(q: f64, df: f64) -> f64 {
    let (mut lo, mut hi) = (order_key(0.0), order_key(1e12));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if student_t_sf(from_order_key(mid), df) > q {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    from_order_key(lo)
}

/// Regularized incomplete beta function `I_x(a, b)` for `a, b > 0`, `x` in [0, 1]: the continued
/// fraction of Numerical Recipes (3rd ed., §6.4, modified Lentz), on the side of `x` where it
/// converges fast.
fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-16;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// `ln Γ(x)` for `x > 0`: the Lanczos approximation (g = 7, 9 coefficients), good to ~1e-15.
fn ln_gamma(x: f64) -> f64 {
    #[allow(clippy::excessive_precision)]
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_93,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_13,
        -176.615_029_162_140_59,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_571_6e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        return (PI / (PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
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

/// `xs` sorted ascending, with −0.0 folded into +0.0; `None` when empty or not all finite.
fn sorted_finite(xs: &[f64]) -> Option<Vec<f64>> {
    if xs.is_empty() || !xs.iter().all(|x| x.is_finite()) {
        return None;
    }
    let mut sorted: Vec<f64> = xs.iter().map(|x| x + 0.0).collect();
    sorted.sort_by(f64::total_cmp);
    Some(sorted)
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
    //! The t distribution is checked against its closed forms (1 and 2 degrees of freedom) and
    //! textbook quantiles; the test against known cases: its interval's coverage over many seeds
    //! on independent and on AR(1) data, where an uncorrected interval visibly under-covers.

    use super::*;

    /// Relative closeness, for values that span many orders of magnitude.
    fn assert_close(actual: f64, expected: f64, rel: f64) {
        let scale = expected.abs().max(f64::MIN_POSITIVE);
        assert!(
            (actual - expected).abs() <= rel * scale,
            "{actual:e} is not within {rel:e} (relative) of {expected:e}"
        );
    }

    /// SplitMix64 with Box-Muller normals: deterministic data for coverage checks.
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
        }

        /// `n` steps of a stationary AR(1) process with unit marginal variance.
        fn ar1(&mut self, n: usize, rho: f64) -> Vec<f64> {
            let innovation = (1.0 - rho * rho).sqrt();
            let mut x = self.normal();
            (0..n)
                .map(|_| {
                    let current = x;
                    x = rho * x + innovation * self.normal();
                    current
                })
                .collect()
        }
    }

    /// Share of `runs` seeds whose `[lower, upper]` holds the true location 0, and share with
    /// p < alpha (a false positive: the true location is 0).
    fn coverage(runs: u64, n: usize, rho: f64) -> (f64, f64) {
        let (mut covered, mut positives) = (0, 0);
        for seed in 0..runs {
            let xs = Rng(seed).ar1(n, rho);
            let test = autocorrelation_corrected_test(&xs, 0.0, 0.05).unwrap();
            covered += usize::from(test.lower <= 0.0 && 0.0 <= test.upper);
            positives += usize::from(test.p_value < 0.05);
        }
        (covered as f64 / runs as f64, positives as f64 / runs as f64)
    }

    #[test]
    fn the_interval_covers_independent_data_at_its_level() {
        // Nominal two-sided level 90% (each bound 95%); the √(π/3) factor makes it a bit wider.
        let (covered, positives) = coverage(2000, 40, 0.0);
        assert!((0.88..=0.97).contains(&covered), "coverage {covered}");
        assert!(positives <= 0.06, "false positives {positives}");
    }

    #[test]
    fn the_interval_covers_strongly_autocorrelated_data() {
        let (covered, positives) = coverage(2000, 120, 0.9);
        assert!((0.85..=0.99).contains(&covered), "coverage {covered}");
        assert!(positives <= 0.08, "false positives {positives}");
        // The same data taken as independent: the naive interval covers far less often.
        let mut naive = 0;
        for seed in 0..2000 {
            let xs = Rng(seed).ar1(120, 0.9);
            let s = Summary::of(&xs).unwrap();
            let margin = student_t_upper_quantile(0.05, 119.0) * s.std_dev / 120f64.sqrt();
            naive += usize::from(s.mean.abs() <= margin);
        }
        let naive = naive as f64 / 2000.0;
        assert!(naive < 0.6, "naive coverage {naive}");
    }

    #[test]
    fn a_real_shift_is_found() {
        // 0.7 standard deviations above 0, AR(1) 0.5, 120 steps: n_eff ≈ 40, the shift is ≈ 4.3
        // standard errors, so the one-sided 5% test finds it about 99% of the time.
        let mut rng = Rng(7);
        let mut found = 0;
        for _ in 0..200 {
            let xs: Vec<f64> = rng.ar1(120, 0.5).iter().map(|x| x + 0.7).collect();
            let test = autocorrelation_corrected_test(&xs, 0.0, 0.05).unwrap();
            found += usize::from(test.p_value < 0.05 && test.lower > 0.0);
        }
        assert!(found >= 190, "found {found} of 200");
    }

    #[test]
    fn constant_values_have_no_noise() {
        let test = autocorrelation_corrected_test(&[0.2; 10], 0.0, 0.05).unwrap();
        assert_eq!(
            (test.hodges_lehmann, test.lower, test.upper),
            (0.2, 0.2, 0.2)
        );
        assert!((test.mean - 0.2).abs() < 1e-15);
        assert_eq!((test.p_value, test.std_error), (0.0, 0.0));
        // No variation: lag-1 autocorrelation 0, plus the bias correction 1/n.
        assert_eq!(test.autocorrelation, 0.1);
        assert_eq!(test.effective_samples, effective_sample_size(10, 0.1));
        let zero = autocorrelation_corrected_test(&[0.0; 10], 0.0, 0.05).unwrap();
        assert_eq!(zero.p_value, 1.0);
        assert_eq!(autocorrelation_corrected_test(&[1.0], 0.0, 0.05), None);
        assert_eq!(
            autocorrelation_corrected_test(&[1.0, f64::NAN], 0.0, 0.05),
            None
        );
        assert_eq!(autocorrelation_corrected_test(&[1.0, 2.0], 0.0, 0.5), None);
    }

    #[test]
    fn autocorrelation_and_effective_sample_size() {
        // Deviations −1.5, −0.5, 0.5, 1.5: Σ products 1.25 over Σ squares 5.
        assert_close(
            lag1_autocorrelation(&[1.0, 2.0, 3.0, 4.0]).unwrap(),
            0.25,
            1e-15,
        );
        // 0.25 + (1 + 0.75)/4.
        assert_close(
            corrected_autocorrelation(&[1.0, 2.0, 3.0, 4.0]).unwrap(),
            0.6875,
            1e-15,
        );
        // Alternating values are negatively correlated: never credited beyond n.
        assert_eq!(
            corrected_autocorrelation(&[1.0, -1.0, 1.0, -1.0, 1.0, -1.0]),
            Some(0.0)
        );
        assert_eq!(lag1_autocorrelation(&[3.0; 5]), Some(0.0));
        assert_close(effective_sample_size(100, 0.9), 100.0 * 0.1 / 1.9, 1e-15);
        assert_eq!(effective_sample_size(100, -0.5), 100.0);
        assert_close(effective_sample_size(100, 1.0), 100.0 * 0.01 / 1.99, 1e-15);
        // The AR(1) estimate lands near the truth on a long series.
        let rho = lag1_autocorrelation(&Rng(3).ar1(20_000, 0.9)).unwrap();
        assert!((rho - 0.9).abs() < 0.02, "{rho}");
    }

    #[test]
    fn hodges_lehmann_is_the_median_of_the_walsh_averages() {
        // Walsh averages of [1, 2, 3]: 1, 1.5, 2, 2, 2.5, 3.
        assert_eq!(hodges_lehmann(&[3.0, 1.0, 2.0]), Some(2.0));
        // [0, 0, 10]: 0, 0, 0, 5, 5, 10 → (0 + 5)/2.
        assert_eq!(hodges_lehmann(&[0.0, 10.0, 0.0]), Some(2.5));
        assert_eq!(hodges_lehmann(&[4.0]), Some(4.0));
        assert_eq!(hodges_lehmann(&[]), None);
        assert_eq!(hodges_lehmann(&[1.0, f64::INFINITY]), None);
        // Against brute force on scrambled data with ties.
        let mut rng = Rng(11);
        for n in [2, 5, 16, 33] {
            let xs: Vec<f64> = (0..n).map(|_| (rng.normal() * 4.0).round() / 2.0).collect();
            let mut walsh = vec![];
            for i in 0..n {
                for j in i..n {
                    walsh.push(f64::midpoint(xs[i], xs[j]));
                }
            }
            walsh.sort_by(f64::total_cmp);
            let m = walsh.len();
            let median = if m % 2 == 1 {
                walsh[m / 2]
            } else {
                f64::midpoint(walsh[m / 2 - 1], walsh[m / 2])
            };
            assert_eq!(hodges_lehmann(&xs), Some(median), "{xs:?}");
        }
    }

    #[test]
    fn student_t_matches_its_closed_forms_and_tables() {
        for t in [-3.0, -0.7, 0.0, 0.3, 1.0, 2.0, 6.3, 40.0] {
            // 1 degree of freedom (Cauchy): 1/2 − atan(t)/π.
            assert_close(student_t_sf(t, 1.0), 0.5 - f64::atan(t) / PI, 1e-12);
            // 2 degrees of freedom: 1/2 − t / (2√(t² + 2)).
            let two = 0.5 - t / (2.0 * (t * t + 2.0).sqrt());
            assert_close(student_t_sf(t, 2.0), two, 1e-12);
        }
        // Textbook one-sided critical values.
        for (q, df, t) in [
            (0.05, 1.0, 6.3138),
            (0.05, 2.0, 2.9200),
            (0.025, 10.0, 2.2281),
            (0.05, 30.0, 1.6973),
            (0.01, 5.0, 3.3649),
            (0.05, 1e7, 1.6449),
        ] {
            assert_close(student_t_upper_quantile(q, df), t, 1e-4);
        }
        assert_eq!(student_t_sf(f64::INFINITY, 3.0), 0.0);
        assert!(student_t_sf(1.0, 0.0).is_nan());
        // ln Γ: Γ(5) = 24, Γ(1/2) = √π, Γ(0.1) = 9.513507698668732.
        assert_close(ln_gamma(5.0), 24f64.ln(), 1e-14);
        assert_close(ln_gamma(0.5), PI.sqrt().ln(), 1e-14);
        assert_close(ln_gamma(0.1), 9.513_507_698_668_732f64.ln(), 1e-13);
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
