//! Layered configuration: the embedded `config/default.toml`, then a file, then environment
//! variables `GRAPHSCALER_<SECTION>__<KEY>`. Every problem is reported at once.

use std::path::Path;

use anyhow::{bail, Context, Result};
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use graphscaler_eval::EvalConfig;
use graphscaler_graph::GraphConfig;
use graphscaler_policy::HpaConfig;
use graphscaler_twin::{SloConfig, TwinConfig, DEFAULT_TOML};
use serde::{Deserialize, Serialize};

/// The `GRAPHSCALER_<SECTION>__<KEY>` variables as a configuration layer (`__` separates the
/// levels; `GRAPHSCALER_CONFIG` and the like, without `__`, are not settings). Each value is read
/// as a TOML value — `1e-4`, `0.3`, `true`, `[1, 2]`, `"x"` — and as a string when it is not one:
/// figment's own `Env` reads `1e-4` as a string and `0.3` as an `f32`.
struct EnvLayer {
    vars: Vec<(String, String)>,
}

/// The process's `GRAPHSCALER_*` variables (those that are valid Unicode), `GRAPHSCALER_CONFIG`
/// included: what the configuration and `train`'s manifest read from the environment.
pub fn graphscaler_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(EnvLayer::PREFIX))
        .collect()
}

impl EnvLayer {
    const PREFIX: &'static str = "GRAPHSCALER_";

    fn from_process() -> Self {
        Self::new(graphscaler_vars())
    }

    fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(Self::PREFIX) && k.contains("__"))
            .collect();
        Self { vars }
    }

    fn value(raw: &str) -> Value {
        toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .filter(|t| t.len() == 1)
            .and_then(|mut t| t.remove("v"))
            .and_then(|v| Value::serialize(v).ok())
            .unwrap_or_else(|| Value::from(raw.to_string()))
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named("`GRAPHSCALER_` environment variable(s)").interpolater(
            |_: &Profile, keys: &[&str]| {
                format!(
                    "{}{}",
                    EnvLayer::PREFIX,
                    keys.join("__").to_ascii_uppercase()
                )
            },
        )
    }

    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (k, raw) in &self.vars {
            let path: Vec<String> = k[Self::PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            let Some((leaf, sections)) = path.split_last() else {
                continue;
            };
            let mut dict = &mut root;
            for s in sections {
                let entry = dict
                    .entry(s.clone())
                    .or_insert_with(|| Value::from(Dict::new()));
                if !matches!(entry, Value::Dict(..)) {
                    *entry = Value::from(Dict::new());
                }
                let Value::Dict(_, d) = entry else {
                    unreachable!("made a dictionary above")
                };
                dict = d;
            }
            dict.insert(leaf.clone(), Self::value(raw));
        }
        Ok(Profile::Default.collect(root))
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Service-level objectives.
    pub slo: SloConfig,
    /// The twin.
    pub twin: TwinConfig,
    /// The HPA baseline.
    pub hpa: HpaConfig,
    /// The evaluation harness.
    pub eval: EvalConfig,
    /// Learning: reward, action rules, training.
    pub learn: graphscaler_learn_config::config::LearnConfig,
    /// The streaming pipeline.
    pub pipeline: PipelineConfig,
}

/// The streaming pipeline's settings (`[pipeline]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Kafka bootstrap servers; empty: in process only.
    pub kafka_bootstrap: String,
    /// Kafka client id prefix.
    pub client_id: String,
    /// librdkafka's security properties for every client (`security.protocol`, `sasl.*`,
    /// `ssl.*`, `enable.ssl.certificate.verification`); empty: plaintext, unauthenticated.
    pub kafka_properties: std::collections::BTreeMap<String, String>,
    /// Snapshot window, s.
    pub window_s: f64,
    /// Windows before unrefreshed entities leave.
    pub stale_windows: u64,
    /// Timely workers per process.
    pub workers: usize,
    /// `host:port` of every graph job process (timely's cluster mode); empty: one process.
    pub graph_cluster: Vec<String>,
    /// This process's index in `graph_cluster`.
    pub graph_process: usize,
    /// Wall-clock grace before a window is cut, s.
    pub grace_s: f64,
    /// The policy stage's policy.
    pub policy: String,
    /// What decides when a learned policy cannot (a snapshot it cannot trust): static, hpa,
    /// tuned-hpa or hpa-<percent>.
    pub fallback_policy: String,
    /// Address of the stages' /metrics; empty: none.
    pub metrics_listen: String,
    /// `/readyz` answers 503 once a stage has made no progress (a poll of the bus answered, a
    /// scrape pass published) for this many seconds.
    pub ready_after_s: f64,
    /// Directory of the graph stage's snapshot store (each window appended as it closes, with
    /// the decision taken on it and the reward after it); empty: none.
    pub snapshot_store: String,
    /// Windows per file of the snapshot store.
    pub store_windows_per_file: usize,
    /// Where the scrape stage reads the cluster.
    pub collect: graphscaler_scrape::collect::CollectConfig,
    /// The actuator's guardrails.
    pub guardrails: graphscaler_actuate::Guardrails,
    /// The actuator's leader election.
    pub lease: graphscaler_actuate::lease::LeaseConfig,
}

impl Config {
    /// Loads the layers; `file` must exist when given.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(f) = file {
            if !f.is_file() {
                bail!("configuration file {} does not exist", f.display());
            }
            fig = fig.merge(Toml::file(f));
        }
        fig = fig.merge(EnvLayer::from_process());
        let cfg: Config = fig.extract().map_err(|e| {
            let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("invalid configuration:\n  - {}", all.join("\n  - "))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every crate's own check of its settings, all problems at once.
    fn validate(&self) -> Result<()> {
        let mut errs = vec![];
        if let Err(graphscaler_twin::TwinError::Config(e)) = self.twin.validate() {
            errs.extend(e);
        }
        errs.extend(self.slo.problems());
        errs.extend(self.hpa.problems());
        errs.extend(self.eval.problems());
        errs.extend(self.learn.problems());
        let p = &self.pipeline;
        let pipeline = p
            .graph()
            .problems()
            .into_iter()
            .chain(p.collect.problems())
            .chain(p.guardrails.problems());
        errs.extend(pipeline.map(|e| format!("pipeline.{e}")));
        errs.extend(p.lease.problem());
        for (k, v) in &p.kafka_properties {
            if !graphscaler_bus::passed_through(k) {
                errs.push(format!(
                    "pipeline.kafka_properties: `{k}` is not passed to the Kafka clients (only security.protocol, sasl.*, ssl.* and enable.ssl.certificate.verification are; the others are graphscaler's own)"
                ));
            } else if v.trim().is_empty() {
                errs.push(format!("pipeline.kafka_properties: `{k}` is empty"));
            }
        }
        match graphscaler_policy::PolicySpec::parse(&p.fallback_policy) {
            Ok(graphscaler_policy::PolicySpec::Learned { .. }) | Err(_) => errs.push(format!(
                "pipeline.fallback_policy must be static, hpa, tuned-hpa or hpa-<percent>, got `{}`",
                p.fallback_policy
            )),
            Ok(_) => {}
        }
        if p.store_windows_per_file == 0 {
            errs.push("pipeline.store_windows_per_file must be at least 1".into());
        }
        if !(graphscaler_schemas::defaults::is_duration_or_zero(p.ready_after_s)
            && p.ready_after_s > 0.0)
        {
            errs.push(format!(
                "pipeline.ready_after_s must be a finite number of seconds above 0, at most a year, got {}",
                p.ready_after_s
            ));
        }
        if !graphscaler_schemas::defaults::is_duration_or_zero(p.grace_s) {
            errs.push(format!(
                "pipeline.grace_s must be a finite number of seconds from 0 to a year, got {}",
                p.grace_s
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            bail!("invalid configuration:\n  - {}", errs.join("\n  - "))
        }
    }

    /// The reward: `[learn.reward]`'s weights with `[slo]`'s objectives and
    /// `eval.target_utilization`.
    pub fn reward(&self) -> graphscaler_learn_config::reward::RewardConfig {
        self.learn.reward.reward(
            self.slo.latency_ms,
            self.slo.error_rate,
            self.eval.target_utilization,
        )
    }

    /// The graph stage's store, if `pipeline.snapshot_store` names one (`dir` overrides it).
    pub fn store(&self, dir: Option<&Path>) -> Option<graphscaler_graph::stage::StoreSpec> {
        let dir = dir.map(Path::to_path_buf).or_else(|| {
            (!self.pipeline.snapshot_store.is_empty())
                .then(|| self.pipeline.snapshot_store.clone().into())
        })?;
        Some(graphscaler_graph::stage::StoreSpec {
            dir,
            per_file: self.pipeline.store_windows_per_file,
            reward: self.reward(),
        })
    }

    /// The topology the configuration names, or `override_path`; neither: Online Boutique,
    /// compiled in.
    pub fn topology(&self, override_path: Option<&Path>) -> Result<graphscaler_twin::Topology> {
        use graphscaler_twin::Topology;
        let path = override_path.map(Path::to_path_buf).or_else(|| {
            (!self.twin.topology.is_empty()).then(|| self.twin.topology.clone().into())
        });
        let t = match &path {
            Some(path) => Topology::from_file(path, &self.twin.fanout_parameters),
            None => Topology::online_boutique(&self.twin.fanout_parameters),
        }
        .context("loading the topology (set twin.topology or pass --topology)")?;
        for line in self.twin.defaulted(&t) {
            tracing::warn!("{}: {line}", t.source);
        }
        Ok(t)
    }
}

impl PipelineConfig {
    /// The Kafka connection of client `name` (`<client_id>-<name>`), with the security
    /// properties.
    pub fn bus(&self, name: &str) -> graphscaler_bus::BusConfig {
        graphscaler_bus::BusConfig {
            bootstrap: self.kafka_bootstrap.clone(),
            client_id: format!("{}-{name}", self.client_id),
            properties: self
                .kafka_properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The graph job's settings.
    pub fn graph(&self) -> GraphConfig {
        GraphConfig {
            window_s: self.window_s,
            stale_windows: self.stale_windows,
            workers: self.workers,
            cluster: (!self.graph_cluster.is_empty())
                .then(|| (self.graph_process, self.graph_cluster.clone())),
        }
    }
}

impl Config {
    /// A twin of the configured (or given) topology under `scenario`, for `duration_s`, seeded.
    pub fn twin(
        &self,
        topology: Option<&Path>,
        scenario: &str,
        duration_s: f64,
        seed: u64,
    ) -> Result<graphscaler_twin::Twin> {
        let shape = graphscaler_twin::Shape::parse(scenario)?;
        Ok(graphscaler_twin::Twin::new(
            self.topology(topology)?,
            self.twin.clone(),
            self.slo.clone(),
            shape,
            duration_s,
            seed,
        )?)
    }
}

/// Parses `4h`, `30m`, `90s`, `1h30m` or plain seconds: positive, at most a year.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    use graphscaler_schemas::defaults::is_duration;
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return if is_duration(v) {
            Ok(v)
        } else {
            Err(format!(
                "duration `{s}` must be positive and at most a year (31622400 s)"
            ))
        };
    }
    let mut total = 0.0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return Err(format!("duration `{s}`: unknown unit `{c}` (use h, m, s)")),
        };
        let v: f64 = num
            .parse()
            .map_err(|_| format!("duration `{s}`: expected a number before `{c}`"))?;
        total += v * unit;
        num.clear();
    }
    if !(num.is_empty() && total.is_finite() && total > 0.0) {
        return Err(format!("duration `{s}`: expected e.g. 4h, 30m, 90s"));
    }
    if !is_duration(total) {
        return Err(format!("duration `{s}` is longer than a year"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("4h"), Ok(14400.0));
        assert_eq!(parse_duration("1h30m"), Ok(5400.0));
        assert_eq!(parse_duration("90"), Ok(90.0));
        assert!(parse_duration("4x").is_err());
        assert!(parse_duration("h").is_err());
        // Absurd values never reach a Duration or an allocation.
        for bad in ["1e300", "1e12", "inf", "NaN", "-5", "0", "9000h"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        assert_eq!(parse_duration("8784h"), Ok(8784.0 * 3600.0));
    }

    #[test]
    fn absurd_settings_are_refused_with_every_problem() {
        let bad = Toml::string(
            "[pipeline]\nwindow_s = 1e300\ngrace_s = -1.0\n[pipeline.collect]\ninterval_s = 1e300\n[hpa]\nsync_period_s = nan\n[twin.load.tasks.index]\nweight = -1.0\n",
        );
        let cfg: Config = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(bad)
            .extract()
            .unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        for what in [
            "pipeline.window_s",
            "pipeline.grace_s",
            "pipeline.collect.interval_s",
            "hpa.sync_period_s",
            "twin.load.tasks.index.weight",
        ] {
            assert!(e.contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn environment_values_are_toml_values() {
        let layer = EnvLayer::new([
            (
                "GRAPHSCALER_LEARN__TRAIN__LEARNING_RATE".to_string(),
                "1e-4".to_string(),
            ),
            ("GRAPHSCALER_SLO__LATENCY_MS".to_string(), "0.3".to_string()),
            ("GRAPHSCALER_LEARN__ACT".to_string(), "sample".to_string()),
            ("GRAPHSCALER_CONFIG".to_string(), "ignored.toml".to_string()),
            ("OTHER__X".to_string(), "1".to_string()),
        ]);
        let fig = Figment::from(Toml::string(DEFAULT_TOML)).merge(layer);
        let c: Config = fig.extract().unwrap();
        assert_eq!(c.learn.train.learning_rate, 1e-4);
        // Exactly 0.3, not 0.3 as an f32.
        assert_eq!(c.slo.latency_ms, 0.3);
        assert_eq!(
            c.learn.act,
            graphscaler_learn_config::config::ActRule::Sample
        );
        assert_eq!(
            EnvLayer::value("[1, 2]"),
            Value::serialize(vec![1i64, 2]).unwrap()
        );
        assert_eq!(
            EnvLayer::value("a = 1\nb"),
            Value::from("a = 1\nb".to_string())
        );
        // A wrong type names the variable.
        let bad = EnvLayer::new([(
            "GRAPHSCALER_LEARN__TRAIN__LEARNING_RATE".to_string(),
            "fast".to_string(),
        )]);
        let e = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(bad)
            .extract::<Config>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("GRAPHSCALER_LEARN__TRAIN__LEARNING_RATE"), "{e}");
    }

    #[test]
    fn layers_and_errors() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.slo.latency_ms, 200.0);
        // Online learning is off unless asked for; its defaults are OnlineConfig's.
        assert!(!c.learn.online.enabled);
        assert_eq!(
            c.learn.online,
            graphscaler_learn_config::config::OnlineConfig::default()
        );
        assert_eq!(c.hpa, graphscaler_policy::hpa::HpaConfig::default());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[slo]\nlatency_ms = 250.0\n[hpa]\ntarget_cpu_utilization = 0\n",
        )
        .unwrap();
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("hpa targets"), "{e}");
        std::fs::write(&f, "[learn.reward]\nslo_margin = 1.5\n").unwrap();
        let e = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("slo_margin"), "{e}");
        std::fs::write(&f, "[slo]\nlatency_msec = 250.0\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&f)).unwrap_err());
        assert!(e.contains("latency_msec"), "{e}");
        std::fs::write(&f, "[slo]\nlatency_ms = 250.0\n").unwrap();
        assert_eq!(Config::load(Some(&f)).unwrap().slo.latency_ms, 250.0);
        assert!(Config::load(Some(&dir.path().join("nope.toml"))).is_err());
    }
}
