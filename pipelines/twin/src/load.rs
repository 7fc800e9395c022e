//! The load model: four named shapes and trace replay, driving a Locust-like closed user model.
//!
//! A shape gives the *nominal* frontend request rate `R(t)`: the rate users would produce if every
//! response were instant. From it the model derives the number of users
//! `U(t) = R(t) · E[wait] / E[requests per task]`, and each second users start task `k` at rate
//! `U(t) · w_k / Σ_j w_j (E[wait] + T_j)` where `T_j` is the current response time of task `j`.
//! So, as with real Locust users, a slow system receives fewer requests (the generator waits for
//! responses) and the rate returns to `R(t)` when latency is low. Task starts are Poisson.
//!
//! The shapes (t in seconds, D the run length):
//!
//! | shape | curve |
//! |---|---|
//! | off-peak | `off_peak · (1 + 0.1 sin(2πt/3600))` |
//! | peak | ramps from off-peak to `peak` over `min(1200, D/10)` s, holds with a ±5% 10-minute wobble, ramps back down over the last `min(1200, D/10)` s |
//! | rush | `rush_base`, plus flash crowds starting at 25% and 60% of D: a linear rise to `rush_peak` in 60 s, a hold of `min(900, D/8)` s, then an exponential decay back with τ = 180 s |
//! | fluctuating | `mid + 1.25·amp·(0.87 sin(2πt/P) + 0.13 sin(6πt/P + 0.7))` with `mid ± amp` = [min, max], clipped to that range |
//! | trace | counts per bucket of a CSV, rescaled so that the busiest bucket is `trace_peak`; looped when the run is longer than the trace, linear between bucket centres. A recorded load ([`Trace::from_rates`]) is replayed at its own rates |
//! | burst | `burst_base · (1 + max_k (x_k − 1)·e_k(t))`: flash crowds of a Markov-modulated Poisson process ([`Bursts`]), drawn from the run's seed |
//!
//! **Burst** is a two-state Markov-modulated Poisson process (MMPP): the rate switches between a
//! calm state at `burst_base_rps` and a crowd state at `x` times it, `x ~ U[burst_min_x,
//! burst_max_x]`, drawn per crowd. Calm spells last `Exp(burst_calm_mean_s)`, crowds
//! `burst_min_hold_s + Exp(burst_hold_mean_s)`. A crowd's envelope `e_k` rises linearly to 1 in
//! `U[burst_rise_min_s, burst_rise_max_s]` (under a minute), holds, and decays exponentially
//! with τ = `burst_decay_s` while the next calm spell runs (a crowd that comes before the last
//! has decayed stacks on its tail by the max). Requests within a state are the user model's
//! Poisson task starts, so the arrivals are an MMPP with smoothed switches. The crowds are drawn
//! once per run from its seed (a `ChaCha8` stream of its own, so that they do not depend on
//! the rest of the simulation): the same seed, the same crowds.

use std::cmp::Ordering;
use std::f64::consts::PI;
use std::path::Path;

use crate::config::LoadConfig;
use crate::error::{Result, TwinError};

/// A load shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Quiet hours.
    OffPeak,
    /// A long plateau of high load.
    Peak,
    /// Flash crowds on a moderate baseline.
    Rush,
    /// A sinusoid between two levels.
    Fluctuating,
    /// Replay of a recorded trace.
    Trace(Trace),
    /// Flash crowds of a Markov-modulated Poisson process.
    Burst(Bursts),
}

impl Shape {
    /// Parses `off-peak`, `peak`, `rush`, `fluctuating`, `burst` or `trace:<file.csv>`. A
    /// burst shape draws its crowds when the twin is built ([`Shape::seeded`]).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "off-peak" | "offpeak" | "off_peak" => Ok(Shape::OffPeak),
            "peak" => Ok(Shape::Peak),
            "rush" => Ok(Shape::Rush),
            "fluctuating" => Ok(Shape::Fluctuating),
            "burst" | "bursts" => Ok(Shape::Burst(Bursts::default())),
            _ => match name.strip_prefix("trace:") {
                Some(path) => Ok(Shape::Trace(Trace::from_csv(Path::new(path))?)),
                None => Err(TwinError::Scenario(name.to_owned())),
            },
        }
    }

    /// The four named shapes.
    pub fn all_named() -> Vec<Shape> {
        vec![Shape::OffPeak, Shape::Peak, Shape::Rush, Shape::Fluctuating]
    }

    /// A short name for tables and files.
    pub fn name(&self) -> String {
        match self {
            Shape::OffPeak => "off-peak".into(),
            Shape::Peak => "peak".into(),
            Shape::Rush => "rush".into(),
            Shape::Fluctuating => "fluctuating".into(),
            Shape::Trace(t) => format!("trace:{}", t.name),
            Shape::Burst(_) => "burst".into(),
        }
    }

    /// The shape of a run of `duration` s with `seed`: a burst shape draws its crowds (the
    /// others are what they are).
    pub fn seeded(self, seed: u64, duration: f64, c: &LoadConfig) -> Self {
        match self {
            Shape::Burst(_) => Shape::Burst(Bursts::draw(seed, duration, c)),
            s => s,
        }
    }

    /// Nominal frontend rps at time `t` of a run of length `duration`.
    pub fn rps(&self, t: f64, duration: f64, c: &LoadConfig) -> f64 {
        match self {
            Shape::OffPeak => c.off_peak_rps * (1.0 + 0.1 * (2.0 * PI * t / 3600.0).sin()),
            Shape::Peak => {
                let ramp = (duration / 10.0).clamp(1.0, 1200.0);
                let level = c.peak_rps * (1.0 + 0.05 * (2.0 * PI * t / 600.0).sin());
                let up = (t / ramp).clamp(0.0, 1.0);
                let down = ((duration - t) / ramp).clamp(0.0, 1.0);
                let f = up.min(down);
                c.off_peak_rps + (level - c.off_peak_rps) * f
            }
            Shape::Rush => {
                let hold = (duration / 8.0).min(900.0);
                let mut extra: f64 = 0.0;
                for start in [0.25 * duration, 0.60 * duration] {
                    let dt = t - start;
                    let a = if dt < 0.0 {
                        0.0
                    } else if dt < 60.0 {
                        dt / 60.0
                    } else if dt < 60.0 + hold {
                        1.0
                    } else {
                        (-(dt - 60.0 - hold) / 180.0).exp()
                    };
                    extra = extra.max(a);
                }
                c.rush_base_rps + (c.rush_peak_rps - c.rush_base_rps) * extra
            }
            Shape::Fluctuating => {
                let mid = 0.5 * (c.fluctuating_min_rps + c.fluctuating_max_rps);
                let amp = 0.5 * (c.fluctuating_max_rps - c.fluctuating_min_rps);
                let p = c.fluctuating_period_s;
                // The harmonic mix peaks at ±0.844; 1.25× makes it touch both levels, with a
                // short plateau at each.
                let v = mid
                    + 1.25
                        * amp
                        * (0.87 * (2.0 * PI * t / p).sin() + 0.13 * (6.0 * PI * t / p + 0.7).sin());
                v.clamp(c.fluctuating_min_rps, c.fluctuating_max_rps)
            }
            Shape::Trace(tr) => tr.rate(t) * tr.peak_rps.unwrap_or(c.trace_peak_rps),
            Shape::Burst(b) => c.burst_base_rps * b.factor(t, c),
        }
    }
}

/// One flash crowd of [`Bursts`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crowd {
    /// When it starts rising, s.
    pub start_s: f64,
    /// How long it rises, s.
    pub rise_s: f64,
    /// How long it holds at its crest after rising, s.
    pub hold_s: f64,
    /// Its crest, times the base rate.
    pub x: f64,
}

/// The flash crowds of a burst run (none until drawn: the base rate alone).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bursts {
    /// The crowds, in time order.
    pub crowds: Vec<Crowd>,
}

impl Bursts {
    /// The crowds of a run of `duration` s with `seed` (see the module's documentation).
    pub fn draw(seed: u64, duration: f64, c: &LoadConfig) -> Self {
        use rand::{Rng, SeedableRng};
        // A stream of its own: the salt keeps it apart from the simulation's stream of `seed`.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6275_7273_745f_6d6d);
        fn exp(rng: &mut rand_chacha::ChaCha8Rng, mean: f64) -> f64 {
            -mean * (1.0 - rng.random::<f64>()).ln()
        }
        let mut crowds = vec![];
        let mut t = exp(&mut rng, c.burst_calm_mean_s);
        while t < duration {
            let rise_s = rng.random_range(c.burst_rise_min_s..=c.burst_rise_max_s);
            let hold_s = c.burst_min_hold_s + exp(&mut rng, c.burst_hold_mean_s);
            let x = rng.random_range(c.burst_min_x..=c.burst_max_x);
            crowds.push(Crowd {
                start_s: t,
                rise_s,
                hold_s,
                x,
            });
            t += rise_s + hold_s + exp(&mut rng, c.burst_calm_mean_s);
        }
        Self { crowds }
    }

    /// The rate at `t` over the base rate.
    pub fn factor(&self, t: f64, c: &LoadConfig) -> f64 {
        let mut extra: f64 = 0.0;
        for k in &self.crowds {
            let dt = t - k.start_s;
            if dt < 0.0 {
                break;
            }
            let e = if dt < k.rise_s {
                dt / k.rise_s
            } else if dt < k.rise_s + k.hold_s {
                1.0
            } else {
                (-(dt - k.rise_s - k.hold_s) / c.burst_decay_s).exp()
            };
            extra = extra.max((k.x - 1.0) * e);
        }
        1.0 + extra
    }
}

/// A CSV file read whole: its text, its name and how to name one of its lines in an error.
struct CsvFile {
    text: String,
    p: String,
    bad: Box<dyn Fn(usize, String) -> TwinError>,
}

impl CsvFile {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| TwinError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::of_text(text, path.display().to_string()))
    }

    /// `text`, named `p` in errors.
    fn of_text(text: String, p: String) -> Self {
        let name = p.clone();
        Self {
            text,
            p,
            bad: Box::new(move |line, message| TwinError::Trace {
                path: name.clone(),
                line,
                message,
            }),
        }
    }
}

/// The shipped Azure LLM inference conversation trace (`data/traces/azure-llm-2023`, CC BY 4.0;
/// provenance in `data/PROVENANCE.md`) bucketed per second, compiled in: the trace of the
/// `bursty-mix` scenario, so that it runs from any directory.
pub const AZURE_CONV_PER_SECOND: (&str, &str) = (
    "data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv_per_second.csv",
    include_str!("../../../data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv_per_second.csv"),
);

/// The same trace per minute, compiled in (`graphscaler twin shapes all`).
pub const AZURE_CONV_PER_MINUTE: (&str, &str) = (
    "data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv_per_minute.csv",
    include_str!("../../../data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv_per_minute.csv"),
);

/// Buckets a file of one row per request into a trace ([`Trace::from_csv`]'s format): the
/// request counts per `bucket_s`-second bucket from the first request's, as
/// `offset_s,requests` CSV text, every bucket up to the last request's (one without a row is one
/// without a request: 0). `column` names the timestamp column (by default the first); a
/// timestamp is seconds (a number) or a UTC date and time `YYYY-MM-DD HH:MM:SS[.frac]` (`T`
/// between them and a trailing `Z` accepted). Rows may come in any order. An error names the
/// line of a timestamp it cannot read.
pub fn bucket_requests(path: &Path, column: Option<&str>, bucket_s: f64) -> Result<String> {
    let CsvFile { text, bad, .. } = CsvFile::read(path)?;
    if !(bucket_s.is_finite() && bucket_s > 0.0) {
        return Err(bad(0, format!("bucket width {bucket_s} s must be > 0")));
    }
    let mut lines = text.lines().enumerate();
    let (_, header) = lines
        .next()
        .ok_or_else(|| bad(1, "empty file, expected a header".into()))?;
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = match column {
        None => 0,
        Some(c) => cols
            .iter()
            .position(|x| *x == c)
            .ok_or_else(|| bad(1, format!("no column `{c}` in header `{header}`")))?,
    };
    let mut times = vec![];
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f = line.split(',').map(str::trim).nth(col).unwrap_or_default();
        let t = graphscaler_schemas::time::parse_instant(f).ok_or_else(|| {
            bad(
                i + 1,
                format!(
                    "`{f}` in column `{}` is neither seconds nor a date and time YYYY-MM-DD HH:MM:SS[.frac]",
                    cols[col]
                ),
            )
        })?;
        times.push(t);
    }
    // Whole seconds and their fraction apart: a Unix time's microseconds would not survive one
    // f64 (its resolution there is about 2e-7 s), and a request must not change bucket for it.
    let Some(&first) = times
        .iter()
        .min_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal))
    else {
        return Err(bad(2, "no request rows".into()));
    };
    let mut counts: Vec<u64> = vec![];
    for &(whole, frac) in &times {
        let since = (whole - first.0) as f64 + (frac - first.1);
        let k = (since / bucket_s).floor() as usize;
        if counts.len() <= k {
            counts.resize(k + 1, 0);
        }
        counts[k] += 1;
    }
    let mut out = String::from("offset_s,requests\n");
    for (k, c) in counts.iter().enumerate() {
        out += &format!("{},{c}\n", k as f64 * bucket_s);
    }
    Ok(out)
}

/// A recorded load trace: request counts per fixed-width bucket, normalised to a peak of 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// File stem.
    pub name: String,
    /// Bucket width, s.
    pub bucket_s: f64,
    /// Relative rate per bucket, max 1.
    pub levels: Vec<f64>,
    /// The rate of a level of 1, rps, when the trace is absolute ([`Trace::from_rates`]: a
    /// recorded load replayed as it was); `None`: `trace_peak_rps` of the load config.
    pub peak_rps: Option<f64>,
}

impl Trace {
    /// Reads a trace: a CSV with a header, one row per bucket, with an `offset_s` column (the
    /// bucket's start in seconds from the first) and a `requests` (or `count`) column; other
    /// columns (`bucket_start`, …) are ignored. The offsets declare the bucket: they start
    /// anywhere and step by the same width on every row — a gap (a missing bucket), a duplicate
    /// or an offset out of order is refused, naming its line, never filled: a missing count is not
    /// zero requests. Counts are finite and ≥ 0, not all zero. A file of one row per request
    /// (timestamps, token counts) is refused with the command that buckets it
    /// ([`bucket_requests`], `graphscaler twin bucket`).
    pub fn from_csv(path: &Path) -> Result<Self> {
        Self::from_csv_file(CsvFile::read(path)?)
    }

    /// A shipped trace ([`AZURE_CONV_PER_SECOND`], [`AZURE_CONV_PER_MINUTE`]): (its path in the
    /// repository, its text), read as [`Trace::from_csv`] reads the file, with the same name.
    pub fn shipped((path, text): (&str, &str)) -> Result<Self> {
        Self::from_csv_file(CsvFile::of_text(text.to_owned(), path.to_owned()))
    }

    fn from_csv_file(CsvFile { text, p, bad }: CsvFile) -> Result<Self> {
        let mut lines = text.lines().enumerate();
        let (_, header) = lines
            .next()
            .ok_or_else(|| bad(1, "empty file, expected a header".into()))?;
        let cols: Vec<&str> = header.split(',').map(str::trim).collect();
        let convert = format!(
            "a trace is request counts per bucket (`offset_s,requests`); a file of one row per request is bucketed by `graphscaler twin bucket {p} --column <timestamp column> --bucket-s 1 --out <counts.csv>`"
        );
        let count_col = cols
            .iter()
            .position(|c| *c == "requests" || *c == "count")
            .ok_or_else(|| {
                bad(
                    1,
                    format!("no `requests` (or `count`) column in header `{header}`: {convert}"),
                )
            })?;
        let offset_col = cols.iter().position(|c| *c == "offset_s").ok_or_else(|| {
            bad(
                1,
                format!(
                    "no `offset_s` column in header `{header}`: the offsets (s) declare the bucket width (0, 1, 2, … per second; 0, 60, 120, … per minute); {convert}"
                ),
            )
        })?;
        let mut levels = Vec::new();
        let mut bucket: Option<f64> = None;
        let mut last: Option<(f64, usize)> = None;
        for (i, line) in lines {
            let n = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() != cols.len() {
                return Err(bad(
                    n,
                    format!("expected {} fields, found {}", cols.len(), f.len()),
                ));
            }
            let v: f64 = f[count_col].parse().map_err(|_| {
                bad(
                    n,
                    format!(
                        "`{}` in column `{}` is not a number",
                        f[count_col], cols[count_col]
                    ),
                )
            })?;
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(n, format!("count {v} must be finite and >= 0")));
            }
            let o: f64 = f[offset_col]
                .parse()
                .ok()
                .filter(|o: &f64| o.is_finite())
                .ok_or_else(|| bad(n, format!("offset `{}` is not a number", f[offset_col])))?;
            if let Some((prev, prev_line)) = last {
                let step = o - prev;
                if step <= 0.0 {
                    return Err(bad(
                        n,
                        format!(
                            "offset {o} s does not follow line {prev_line}'s {prev} s: a duplicate or out-of-order bucket"
                        ),
                    ));
                }
                let w = *bucket.get_or_insert(step);
                if (step - w).abs() > 1e-6 * w.max(1.0) {
                    let what = if step > w && ((step / w).round() * w - step).abs() <= 1e-6 * w {
                        format!(
                            "{} missing bucket(s) after line {prev_line}",
                            (step / w).round() as u64 - 1
                        )
                    } else {
                        "an offset off the bucket grid".into()
                    };
                    return Err(bad(
                        n,
                        format!(
                            "offset {o} s is {step} s after line {prev_line}'s, the bucket is {w} s: {what} (gaps are not filled: a missing count is not zero requests)"
                        ),
                    ));
                }
            }
            last = Some((o, n));
            levels.push(v);
        }
        let Some(bucket_s) = bucket else {
            return Err(bad(
                2,
                format!(
                    "{} data row(s): a trace needs two rows at least, their offsets giving the bucket width",
                    levels.len()
                ),
            ));
        };
        let max = levels.iter().cloned().fold(0.0, f64::max);
        if max <= 0.0 {
            return Err(bad(2, "every count is zero".into()));
        }
        for l in &mut levels {
            *l /= max;
        }
        let name = Path::new(&p)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Trace {
            name,
            bucket_s,
            levels,
            peak_rps: None,
        })
    }

    /// An absolute trace: `rates` (rps, one per bucket of `bucket_s` s) replayed as they are,
    /// whatever `trace_peak_rps` says — a recorded load (the entry request rates of stored
    /// snapshots). An error names the first rate that is not finite and ≥ 0, or says that
    /// there is none or every one is zero.
    pub fn from_rates(name: &str, bucket_s: f64, rates: &[f64]) -> Result<Self> {
        let bad = |line: usize, message: String| TwinError::Trace {
            path: name.to_owned(),
            line,
            message,
        };
        if !(bucket_s.is_finite() && bucket_s > 0.0) {
            return Err(bad(0, format!("bucket width {bucket_s} s must be > 0")));
        }
        if let Some((i, r)) = rates
            .iter()
            .enumerate()
            .find(|(_, r)| !(r.is_finite() && **r >= 0.0))
        {
            return Err(bad(i + 1, format!("rate {r} must be finite and >= 0")));
        }
        let max = rates.iter().cloned().fold(0.0, f64::max);
        if max <= 0.0 {
            return Err(bad(0, "no rate above zero".into()));
        }
        Ok(Trace {
            name: name.to_owned(),
            bucket_s,
            levels: rates.iter().map(|r| r / max).collect(),
            peak_rps: Some(max),
        })
    }

    /// Length of the trace, s.
    pub fn duration_s(&self) -> f64 {
        self.bucket_s * self.levels.len() as f64
    }

    /// Relative rate at time `t` (looped, linear between bucket centres).
    pub fn rate(&self, t: f64) -> f64 {
        let n = self.levels.len();
        let x = (t.rem_euclid(self.duration_s())) / self.bucket_s - 0.5;
        let i = x.floor();
        let frac = x - i;
        let a = self.levels[(i as isize).rem_euclid(n as isize) as usize];
        let b = self.levels[((i as isize) + 1).rem_euclid(n as isize) as usize];
        a + (b - a) * frac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TwinConfig;

    #[test]
    fn shapes_hit_their_documented_levels() {
        let c = TwinConfig::default().load;
        let d = 4.0 * 3600.0;
        let max = |s: &Shape| {
            (0..(d as usize))
                .map(|t| s.rps(t as f64, d, &c))
                .fold(0.0, f64::max)
        };
        let min = |s: &Shape| {
            (0..(d as usize))
                .map(|t| s.rps(t as f64, d, &c))
                .fold(f64::INFINITY, f64::min)
        };
        assert!((max(&Shape::OffPeak) - 55.0).abs() < 0.1);
        assert!((max(&Shape::Peak) - 315.0).abs() < 0.1);
        assert!((max(&Shape::Rush) - 500.0).abs() < 1e-6);
        assert!((min(&Shape::Rush) - 100.0).abs() < 1e-6);
        assert!((min(&Shape::Fluctuating) - 150.0).abs() < 1.0);
        assert!((max(&Shape::Fluctuating) - 400.0).abs() < 1.0);
        assert!((Shape::Peak.rps(0.0, d, &c) - 50.0).abs() < 1e-9);
    }

    /// A recorded load is replayed at its own rates, whatever `trace_peak_rps` says; bad rates
    /// are refused by position.
    #[test]
    fn a_recorded_load_replays_its_own_rates() {
        let c = TwinConfig::default().load;
        let tr = Trace::from_rates("run-1", 30.0, &[100.0, 300.0, 200.0]).unwrap();
        assert_eq!(tr.duration_s(), 90.0);
        let shape = Shape::Trace(tr);
        // At the bucket centres, the recorded rates; between them, linear.
        assert!((shape.rps(15.0, 90.0, &c) - 100.0).abs() < 1e-9);
        assert!((shape.rps(45.0, 90.0, &c) - 300.0).abs() < 1e-9);
        assert!((shape.rps(60.0, 90.0, &c) - 250.0).abs() < 1e-9);
        assert_eq!(shape.name(), "trace:run-1");
        let e = Trace::from_rates("run-2", 30.0, &[1.0, f64::NAN]).unwrap_err();
        assert!(
            e.to_string().contains("line 2") && e.to_string().contains("NaN"),
            "{e}"
        );
        assert!(Trace::from_rates("run-3", 30.0, &[0.0, 0.0]).is_err());
        assert!(Trace::from_rates("run-4", 0.0, &[1.0]).is_err());
    }

    /// The burst generator: flash crowds of several times the base rate, each reached in
    /// under a minute, spaced by calm spells near their configured mean; the same seed draws
    /// the same crowds, another seed others.
    #[test]
    fn bursts_are_flash_crowds_of_a_markov_modulated_process() {
        let c = TwinConfig::default().load;
        let d = 48.0 * 3600.0;
        let b = Bursts::draw(7, d, &c);
        assert_eq!(b, Bursts::draw(7, d, &c));
        assert_ne!(b, Bursts::draw(8, d, &c));
        let n = b.crowds.len();
        // 48 h at a mean cycle of ~ calm 1200 s + hold 300 s + rise 32 s: about 110 crowds.
        assert!((70..160).contains(&n), "{n} crowds");
        for k in &b.crowds {
            assert!(k.rise_s < 60.0 && k.rise_s >= c.burst_rise_min_s);
            assert!((c.burst_min_x..=c.burst_max_x).contains(&k.x));
            assert!(k.hold_s >= c.burst_min_hold_s);
            let top = c.burst_base_rps * b.factor(k.start_s + k.rise_s, &c);
            assert!(top >= 3.0 * c.burst_base_rps - 1e-9, "{top}");
        }
        let gaps: Vec<f64> = b
            .crowds
            .windows(2)
            .map(|w| w[1].start_s - (w[0].start_s + w[0].rise_s + w[0].hold_s))
            .collect();
        let mean_gap = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!(
            (0.6 * c.burst_calm_mean_s..1.4 * c.burst_calm_mean_s).contains(&mean_gap),
            "{mean_gap}"
        );
        // Through the shape: the base rate between crowds, the crest on top, the unseeded
        // shape the base rate alone.
        let shape = Shape::parse("burst").unwrap();
        assert_eq!(shape.rps(100.0, d, &c), c.burst_base_rps);
        let shape = shape.seeded(7, d, &c);
        let first = b.crowds[0];
        assert!(
            (shape.rps(first.start_s - 1.0, d, &c) - c.burst_base_rps).abs() < 1e-9
                || first.start_s < 1.0
        );
        let crest = shape.rps(first.start_s + first.rise_s + 1.0, d, &c);
        assert!((crest - first.x * c.burst_base_rps).abs() < 1e-6, "{crest}");
        assert_eq!(shape.name(), "burst");
    }

    #[test]
    fn trace_files_load_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("t_per_second.csv");
        std::fs::write(&good, "bucket_start,offset_s,requests\na,0,2\nb,1,4\n").unwrap();
        let t = Trace::from_csv(&good).unwrap();
        assert_eq!(t.bucket_s, 1.0);
        assert_eq!(t.levels, vec![0.5, 1.0]);
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "bucket_start,offset_s,requests\na,0,2\nb,1,lots\n").unwrap();
        let msg = Trace::from_csv(&bad).unwrap_err().to_string();
        assert!(
            msg.contains("bad.csv") && msg.contains("line 3") && msg.contains("`lots`"),
            "{msg}"
        );
        let short = dir.path().join("short.csv");
        std::fs::write(&short, "bucket_start,offset_s,requests\na,0\n").unwrap();
        let msg = Trace::from_csv(&short).unwrap_err().to_string();
        assert!(
            msg.contains("line 2") && msg.contains("expected 3 fields"),
            "{msg}"
        );
        assert!(matches!(
            Shape::parse("trace:/nonexistent.csv"),
            Err(TwinError::Io { .. })
        ));
        assert!(matches!(Shape::parse("storm"), Err(TwinError::Scenario(_))));
    }

    /// Every malformed trace of `tests/fixtures/traces` is refused with its file, its line and
    /// what is wrong.
    #[test]
    fn malformed_traces_are_refused_naming_what_is_wrong() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/traces");
        for (file, line, what) in [
            ("five-minute-without-offsets.csv", 1, "no `offset_s` column"),
            ("per-request.csv", 1, "graphscaler twin bucket"),
            ("gap.csv", 5, "1 missing bucket(s) after line 4"),
            ("duplicate.csv", 4, "a duplicate or out-of-order bucket"),
            ("off-grid.csv", 4, "off the bucket grid"),
            ("one-row.csv", 2, "two rows at least"),
            ("negative.csv", 3, "must be finite and >= 0"),
        ] {
            let msg = Trace::from_csv(&dir.join(file)).unwrap_err().to_string();
            assert!(
                msg.contains(file) && msg.contains(&format!("line {line}:")) && msg.contains(what),
                "{file}: {msg}"
            );
        }
    }

    /// `bucket_requests` turns Azure's per-request file into exactly the per-second and
    /// per-minute traces shipped beside it (binned independently, by the provenance's recipe).
    #[test]
    fn bucketing_the_azure_requests_gives_the_shipped_traces() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/traces/azure-llm-2023");
        let raw = dir.join("AzureLLMInferenceTrace_conv.csv");
        for (bucket_s, shipped) in [
            (1.0, "AzureLLMInferenceTrace_conv_per_second.csv"),
            (60.0, "AzureLLMInferenceTrace_conv_per_minute.csv"),
        ] {
            let ours = bucket_requests(&raw, Some("TIMESTAMP"), bucket_s).unwrap();
            let theirs = std::fs::read_to_string(dir.join(shipped)).unwrap();
            let counts = |text: &str, col: usize| -> Vec<(f64, u64)> {
                text.lines()
                    .skip(1)
                    .map(|l| {
                        let f: Vec<&str> = l.split(',').collect();
                        (f[col].parse().unwrap(), f[col + 1].parse().unwrap())
                    })
                    .collect()
            };
            assert_eq!(counts(&ours, 0), counts(&theirs, 1), "{shipped}");
        }
        let tmp = tempfile::tempdir().unwrap();
        let seconds = tmp.path().join("s.csv");
        std::fs::write(&seconds, "t,x\n10.5,a\n9.9,b\n12.0,c\n").unwrap();
        assert_eq!(
            bucket_requests(&seconds, None, 1.0).unwrap(),
            "offset_s,requests\n0,2\n1,0\n2,1\n"
        );
        let bad = tmp.path().join("bad.csv");
        std::fs::write(
            &bad,
            "TIMESTAMP\n2023-11-16 18:15:46\n2023-13-16 18:15:47\n",
        )
        .unwrap();
        let msg = bucket_requests(&bad, None, 1.0).unwrap_err().to_string();
        assert!(
            msg.contains("line 3") && msg.contains("2023-13-16"),
            "{msg}"
        );
        let msg = bucket_requests(&raw, Some("time"), 1.0)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no column `time`"), "{msg}");
    }

    #[test]
    fn the_azure_trace_replays() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv_per_minute.csv");
        let t = Trace::from_csv(&p).unwrap();
        assert_eq!(t.bucket_s, 60.0);
        assert_eq!(t.levels.len(), 59);
        assert!(t.levels.contains(&1.0));
    }
}
