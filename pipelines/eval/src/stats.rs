//! Statistics across replays: mean with a Student-t 95% confidence interval, and Cliff's δ.

use serde::Serialize;

/// Mean and 95% confidence interval of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanCi {
    /// Sample mean.
    pub mean: f64,
    /// Half-width of the 95% interval (`t₀.₉₇₅,ₙ₋₁ · s / √n`); 0 for n < 2.
    pub half_width: f64,
    /// Sample size.
    pub n: usize,
}

impl MeanCi {
    /// Lower bound.
    pub fn lo(&self) -> f64 {
        self.mean - self.half_width
    }
    /// Upper bound.
    pub fn hi(&self) -> f64 {
        self.mean + self.half_width
    }
}

/// Two-sided 97.5% quantiles of Student's t for 1..=30 degrees of freedom.
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// `t₀.₉₇₅` with `df` degrees of freedom (table to 30, then interpolation in 1/df to 1.960).
pub fn t975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T975[df - 1],
        _ => {
            // Between df = 30 (2.042) and ∞ (1.960), linear in 1/df: exact to 3 decimals at 40,
            // 60 and 120 (2.021, 2.000, 1.980).
            1.960 + (2.042 - 1.960) * 30.0 / df as f64
        }
    }
}

/// Mean and Student-t 95% CI of `xs`. NaNs are an error of the caller and propagate.
pub fn mean_ci(xs: &[f64]) -> MeanCi {
    let n = xs.len();
    if n == 0 {
        return MeanCi {
            mean: f64::NAN,
            half_width: f64::NAN,
            n,
        };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return MeanCi {
            mean,
            half_width: 0.0,
            n,
        };
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    MeanCi {
        mean,
        half_width: t975(n - 1) * (var / n as f64).sqrt(),
        n,
    }
}

/// Cliff's δ = (#{xᵢ > yⱼ} − #{xᵢ < yⱼ}) / (n·m), in [−1, 1].
pub fn cliffs_delta(xs: &[f64], ys: &[f64]) -> f64 {
    if xs.is_empty() || ys.is_empty() {
        return f64::NAN;
    }
    let mut gt = 0i64;
    let mut lt = 0i64;
    for x in xs {
        for y in ys {
            if x > y {
                gt += 1;
            } else if x < y {
                lt += 1;
            }
        }
    }
    (gt - lt) as f64 / (xs.len() * ys.len()) as f64
}

/// Magnitude of a Cliff's δ (Romano et al. 2006 thresholds 0.147 / 0.33 / 0.474).
pub fn cliffs_magnitude(delta: f64) -> &'static str {
    let d = delta.abs();
    if d.is_nan() {
        "n/a"
    } else if d < 0.147 {
        "negligible"
    } else if d < 0.33 {
        "small"
    } else if d < 0.474 {
        "medium"
    } else {
        "large"
    }
}

/// The `q`-quantile of `xs` (linear interpolation between order statistics, as numpy's default).
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (h - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_matches_a_hand_computation() {
        // xs = 1..=5: mean 3, s = √2.5, t(4) = 2.776 → half-width 2.776·√2.5/√5 = 1.9629.
        let ci = mean_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(ci.mean, 3.0);
        assert!((ci.half_width - 2.776 * (0.5f64).sqrt()).abs() < 1e-12);
        assert!((ci.half_width - 1.962_93).abs() < 1e-4);
        // scipy.stats.t.ppf(0.975, df) at 40, 60, 120.
        assert!((t975(40) - 2.021).abs() < 2e-3);
        assert!((t975(60) - 2.000).abs() < 2e-3);
        assert!((t975(120) - 1.980).abs() < 2e-3);
        assert_eq!(mean_ci(&[4.0]).half_width, 0.0);
    }

    #[test]
    fn cliffs_delta_known_values() {
        assert_eq!(cliffs_delta(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]), 1.0);
        assert_eq!(cliffs_delta(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), -1.0);
        assert_eq!(cliffs_delta(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        // x = [1,2,3,4], y = [2,3]: pairs > : (3,2),(4,2),(4,3) = 3; < : (1,2),(1,3),(2,3) = 3 → 0.
        assert_eq!(cliffs_delta(&[1.0, 2.0, 3.0, 4.0], &[2.0, 3.0]), 0.0);
        // x = [3,4,5], y = [1,2,4]: > : 3>1,3>2,4>1,4>2,5>1,5>2,5>4 = 7; < : 3<4 = 1 → 6/9.
        assert!((cliffs_delta(&[3.0, 4.0, 5.0], &[1.0, 2.0, 4.0]) - 6.0 / 9.0).abs() < 1e-12);
        assert_eq!(cliffs_magnitude(0.1), "negligible");
        assert_eq!(cliffs_magnitude(-0.2), "small");
        assert_eq!(cliffs_magnitude(0.4), "medium");
        assert_eq!(cliffs_magnitude(0.474), "large");
    }

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert!((quantile(&[0.0, 10.0], 0.9) - 9.0).abs() < 1e-12);
    }
}
