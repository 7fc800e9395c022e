//! Closed-form M/M/c results the twin's service model is built on.
//!
//! A service with `c` ready pods, each serving at rate `μ`, receiving Poisson arrivals at rate
//! `λ < cμ`, is an M/M/c queue. With offered load `a = λ/μ` and utilisation `ρ = a/c`:
//!
//! * Erlang C, the probability that an arrival waits: `C(c, a) = B / (1 − ρ(1 − B))` with the
//!   Erlang B recursion `B₀ = 1`, `Bₖ = a·Bₖ₋₁ / (k + a·Bₖ₋₁)` (stable for large `c`).
//! * Mean wait `W_q = C / (cμ − λ)`; mean sojourn `W = W_q + 1/μ`; Little: `L = λW`.
//! * The wait is 0 with probability `1 − C` and exponential with rate `θ = cμ − λ` otherwise; the
//!   sojourn adds an independent Exp(μ) service time, so
//!   `P(T > t) = (1 − C)e^{−μt} + C(θe^{−μt} − μe^{−θt})/(θ − μ)` (θ ≠ μ).
//!
//! The twin carries a fluid backlog on top of this for overload (see `sim.rs`): while `λ ≥ cμ`
//! the closed forms do not apply and the backlog's drain time dominates.
//!
//! ```
//! use graphscaler_twin::queue::Mmc;
//! let q = Mmc::new(1, 0.5, 1.0); // M/M/1, ρ = 0.5
//! assert!((q.mean_sojourn() - 2.0).abs() < 1e-12);
//! ```

/// An M/M/c queue in steady state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mmc {
    /// Servers.
    pub c: u32,
    /// Arrival rate, per second.
    pub lambda: f64,
    /// Service rate of one server, per second.
    pub mu: f64,
}

impl Mmc {
    /// A queue with `c` servers; `lambda` must be below `c·mu` for the results to hold.
    pub fn new(c: u32, lambda: f64, mu: f64) -> Self {
        Self { c, lambda, mu }
    }

    /// Utilisation ρ = λ / (cμ).
    pub fn rho(&self) -> f64 {
        self.lambda / (self.c as f64 * self.mu)
    }

    /// Whether the queue is stable (ρ < 1).
    pub fn is_stable(&self) -> bool {
        self.c > 0 && self.mu > 0.0 && self.rho() < 1.0
    }

    /// Erlang C: the probability that an arrival has to wait.
    pub fn erlang_c(&self) -> f64 {
        erlang_c(self.c, self.lambda / self.mu)
    }

    /// Mean time in queue, seconds.
    pub fn mean_wait(&self) -> f64 {
        self.erlang_c() / (self.c as f64 * self.mu - self.lambda)
    }

    /// Mean sojourn (wait + service), seconds.
    pub fn mean_sojourn(&self) -> f64 {
        self.mean_wait() + 1.0 / self.mu
    }

    /// Variance of the sojourn time, seconds².
    pub fn var_sojourn(&self) -> f64 {
        self.var_wait() + 1.0 / (self.mu * self.mu)
    }

    /// Variance of the time in queue, seconds².
    pub fn var_wait(&self) -> f64 {
        let c = self.erlang_c();
        let theta = self.c as f64 * self.mu - self.lambda;
        let ew = c / theta;
        let ew2 = 2.0 * c / (theta * theta);
        ew2 - ew * ew
    }

    /// Mean number waiting, `L_q = λ·W_q`.
    pub fn mean_queue_len(&self) -> f64 {
        self.lambda * self.mean_wait()
    }

    /// `P(T > t)` for the sojourn time `T`.
    pub fn sojourn_survival(&self, t: f64) -> f64 {
        self.survival_with_service(t, self.mu)
    }

    /// `P(W + S > t)` where `W` is this queue's wait and `S` an independent Exp(`nu`) service
    /// time. With `nu = mu` this is the M/M/c sojourn; the twin uses `nu` = the unthrottled
    /// per-request speed (see `sim.rs`).
    pub fn survival_with_service(&self, t: f64, nu: f64) -> f64 {
        let c = self.erlang_c();
        let mu = nu;
        let theta = self.c as f64 * self.mu - self.lambda;
        let e_mu = (-mu * t).exp();
        if (theta - mu).abs() < 1e-9 * mu {
            (1.0 - c) * e_mu + c * (1.0 + mu * t) * e_mu
        } else {
            (1.0 - c) * e_mu + c * (theta * e_mu - mu * (-theta * t).exp()) / (theta - mu)
        }
    }

    /// The `q`-quantile of the sojourn time, seconds (bisection on the survival function).
    pub fn sojourn_quantile(&self, q: f64) -> f64 {
        self.quantile_with_service(q, self.mu)
    }

    /// The `q`-quantile of `W + S`, `S` ~ Exp(`nu`) (see [`Mmc::survival_with_service`]).
    pub fn quantile_with_service(&self, q: f64, nu: f64) -> f64 {
        let target = 1.0 - q;
        let mut hi = (self.mean_wait() + 1.0 / nu).max(1.0 / nu);
        while self.survival_with_service(hi, nu) > target {
            hi *= 2.0;
        }
        let mut lo = 0.0;
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if self.survival_with_service(mid, nu) > target {
                lo = mid;
            } else {
                hi = mid;
            }
            if hi - lo < 1e-9 * hi {
                break;
            }
        }
        0.5 * (lo + hi)
    }
}

/// Erlang C for `c` servers and offered load `a` (Erlangs). Returns 1 when `a ≥ c`.
pub fn erlang_c(c: u32, a: f64) -> f64 {
    if c == 0 || a >= c as f64 {
        return 1.0;
    }
    if a <= 0.0 {
        return 0.0;
    }
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (k as f64 + a * b);
    }
    let rho = a / c as f64;
    b / (1.0 - rho * (1.0 - b))
}

/// Quantile of a Gamma distribution with the given mean and variance (Wilson–Hilferty), used
/// for latencies composed along a call tree, where sums of sojourn times have no closed form.
pub fn gamma_quantile(mean: f64, var: f64, z: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    if var <= 0.0 {
        return mean;
    }
    let k = mean * mean / var;
    let h = 1.0 / (9.0 * k);
    let x = 1.0 - h + z * h.sqrt();
    mean * x.max(0.0).powi(3)
}

/// `P(X > x)` of the same Gamma approximation.
pub fn gamma_survival(mean: f64, var: f64, x: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    if var <= 0.0 {
        return if x < mean { 1.0 } else { 0.0 };
    }
    let k = mean * mean / var;
    let h = 1.0 / (9.0 * k);
    let z = ((x / mean).max(0.0).cbrt() - (1.0 - h)) / h.sqrt();
    1.0 - std_normal_cdf(z)
}

/// Standard normal quantiles used by the twin.
pub const Z50: f64 = 0.0;
/// z for the 95th percentile.
pub const Z95: f64 = 1.644_853_626_951_472_2;
/// z for the 99th percentile.
pub const Z99: f64 = 2.326_347_874_040_841;

/// Φ(z), the standard normal CDF (Abramowitz–Stegun 7.1.26 on erf, |error| < 1.5e-7).
pub fn std_normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    let erf = if x >= 0.0 { y } else { -y };
    0.5 * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn mm1_closed_forms() {
        for &(lambda, mu) in &[(0.5, 1.0), (8.0, 10.0), (95.0, 100.0)] {
            let q = Mmc::new(1, lambda, mu);
            let rho: f64 = lambda / mu;
            assert!((q.erlang_c() - rho).abs() < 1e-12, "C(1,a) = ρ");
            assert!((q.mean_wait() - rho / (mu - lambda)).abs() < 1e-9);
            assert!((q.mean_sojourn() - 1.0 / (mu - lambda)).abs() < 1e-9);
            // M/M/1 sojourn is Exp(μ − λ): variance and p95 in closed form.
            assert!((q.var_sojourn() - 1.0 / ((mu - lambda) * (mu - lambda))).abs() < 1e-6);
            let p95 = q.sojourn_quantile(0.95);
            assert!(
                (p95 - 20f64.ln() / (mu - lambda)).abs() < 1e-6 * p95,
                "{p95}"
            );
        }
    }

    #[test]
    fn erlang_c_matches_tables() {
        // Textbook values: M/M/2 with a = 1 → C = 1/3; M/M/5 with a = 4 → C = 0.5541.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
        assert!((erlang_c(5, 4.0) - 0.554_113).abs() < 1e-5);
        // M/M/2 with a = 1: W_q = C/(2μ − λ) = (1/3)/1.
        let q = Mmc::new(2, 1.0, 1.0);
        assert!((q.mean_wait() - 1.0 / 3.0).abs() < 1e-12);
        // Large c does not overflow.
        let c = erlang_c(500, 480.0);
        assert!(c > 0.0 && c < 1.0);
    }

    /// An event-by-event simulation of M/M/c (FCFS, exact) against the closed forms: the
    /// sojourn mean, p95, and Little's law L = λW.
    #[test]
    fn closed_forms_match_an_exact_simulation() {
        for &(c, lambda, mu) in &[(1u32, 7.0, 10.0), (4, 30.0, 10.0), (8, 70.0, 10.0)] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
            let mut exp = |rate: f64| -(1.0 - rng.random::<f64>()).ln() / rate;
            let n = 400_000;
            let mut free_at = vec![0.0f64; c as usize];
            let mut t = 0.0;
            let mut sojourns = Vec::with_capacity(n);
            let mut area = 0.0; // ∫ number in system dt = Σ sojourns
            for _ in 0..n {
                t += exp(lambda);
                let (k, &earliest) = free_at
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap();
                let start = earliest.max(t);
                let done = start + exp(mu);
                free_at[k] = done;
                sojourns.push(done - t);
                area += done - t;
            }
            let q = Mmc::new(c, lambda, mu);
            let mean = sojourns.iter().sum::<f64>() / n as f64;
            assert!(
                (mean - q.mean_sojourn()).abs() / q.mean_sojourn() < 0.03,
                "c={c}: simulated {mean} vs {}",
                q.mean_sojourn()
            );
            sojourns.sort_by(f64::total_cmp);
            let p95 = sojourns[(0.95 * n as f64) as usize];
            let want = q.sojourn_quantile(0.95);
            assert!(
                (p95 - want).abs() / want < 0.03,
                "c={c}: p95 {p95} vs {want}"
            );
            // Little's law on the simulated path: L = area / T, λW with λ = n / T.
            let l = area / t;
            assert!((l - (n as f64 / t) * mean).abs() < 1e-9 * l);
            assert!(
                (l - lambda * q.mean_sojourn()).abs() / l < 0.04,
                "c={c}: L {l}"
            );
        }
    }

    #[test]
    fn gamma_approximation_is_close_for_exponentials() {
        // Exp(1): mean 1, var 1, p95 = ln 20 ≈ 2.996. Wilson–Hilferty is within 2%.
        let p = gamma_quantile(1.0, 1.0, Z95);
        assert!((p - 20f64.ln()).abs() / 20f64.ln() < 0.02, "{p}");
        let s = gamma_survival(1.0, 1.0, 20f64.ln());
        assert!((s - 0.05).abs() < 0.005, "{s}");
        assert!((std_normal_cdf(Z95) - 0.95).abs() < 1e-6);
    }
}
