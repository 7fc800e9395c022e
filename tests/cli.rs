//! The `graphscaler` command as a user meets it: the evaluation writes its tables and files,
//! runs are reproducible, and bad input is named.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn graphscaler(args: &[&str]) -> Output {
    graphscaler_with(args, &[])
}

/// `graphscaler args` with the environment variables `env` set.
fn graphscaler_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    graphscaler_in(&repo(), args, env)
}

/// `graphscaler args` run in directory `dir`, with the environment variables `env` set.
fn graphscaler_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graphscaler"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn eval_prints_a_table_and_writes_csv_parquet_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = graphscaler(&[
        "eval",
        "--policies",
        "static,hpa",
        "--scenarios",
        "peak,rush",
        "--replays",
        "3",
        "--duration",
        "40m",
        "--out",
        out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "SLO viol %",
        "tuned-hpa",
        "static",
        "peak",
        "rush",
        "(reference)",
        "Cliff's delta",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in\n{text}");
    }
    for f in [
        "runs.csv",
        "summary.csv",
        "cliffs_delta.csv",
        "runs.parquet",
        "timeseries.parquet",
        "timeseries-peak.png",
        "timeseries-rush.png",
        "metrics.png",
    ] {
        let p = dir.path().join(f);
        assert!(
            p.metadata().map(|m| m.len() > 100).unwrap_or(false),
            "{f} missing or empty"
        );
    }
    // 3 policies (tuned-hpa joins as the CAF reference) x 2 scenarios x 3 replays.
    let runs = std::fs::read_to_string(dir.path().join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 1 + 18);
    // The tuned HPA's CAF against itself is exactly 1.
    let header: Vec<&str> = runs.lines().next().unwrap().split(',').collect();
    let caf = header.iter().position(|h| *h == "caf").unwrap();
    for line in runs.lines().skip(1).filter(|l| l.contains(",tuned-hpa,")) {
        assert_eq!(line.split(',').nth(caf), Some("1"), "{line}");
    }
    // PNG signature.
    let png = std::fs::read(dir.path().join("metrics.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // Parquet files start and end with PAR1.
    let pq = std::fs::read(dir.path().join("timeseries.parquet")).unwrap();
    assert_eq!(&pq[..4], b"PAR1");
    assert_eq!(&pq[pq.len() - 4..], b"PAR1");
}

#[test]
fn the_same_seed_gives_the_same_results() {
    let run = |dir: &Path| {
        let o = graphscaler(&[
            "twin",
            "run",
            "--scenario",
            "fluctuating",
            "--policy",
            "hpa",
            "--seed",
            "7",
            "--duration",
            "30m",
            "--no-plots",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read_to_string(dir.join("runs.csv")).unwrap()
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert_eq!(run(a.path()), run(b.path()));
}

#[test]
fn a_broken_topology_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.json");
    std::fs::write(&bad, "{\"services\": [ {\"name\": \"a\", ").unwrap();
    let o = graphscaler(&[
        "twin",
        "run",
        "--duration",
        "1m",
        "--topology",
        bad.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("broken.json") && e.contains("line 1"), "{e}");

    let missing = dir.path().join("nope.json");
    let o = graphscaler(&[
        "twin",
        "run",
        "--duration",
        "1m",
        "--topology",
        missing.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nope.json"), "{}", stderr(&o));

    let wrong = dir.path().join("wrong.json");
    let text = std::fs::read_to_string(repo().join("data/topologies/online-boutique.json"))
        .unwrap()
        .replace("\"cpu_request_m\": 200", "\"cpu_request_m\": -200");
    std::fs::write(&wrong, text).unwrap();
    let o = graphscaler(&[
        "twin",
        "run",
        "--duration",
        "1m",
        "--topology",
        wrong.to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(
        e.contains("wrong.json") && e.contains("services[1].cpu_request_m"),
        "{e}"
    );
}

#[test]
fn a_broken_trace_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("trace.csv");
    std::fs::write(&bad, "offset_s,requests\n0,5\n1,5\n2,NaN?\n").unwrap();
    let o = graphscaler(&[
        "twin",
        "run",
        "--duration",
        "1m",
        "--scenario",
        &format!("trace:{}", bad.display()),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("trace.csv") && e.contains("line 4"), "{e}");
}

#[test]
fn bad_names_and_configuration_are_refused_with_every_problem() {
    let o = graphscaler(&["eval", "--policies", "hpa,magic", "--duration", "1m"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown policy `magic`"),
        "{}",
        stderr(&o)
    );
    let o = graphscaler(&["eval", "--scenarios", "storm", "--duration", "1m"]);
    assert!(
        stderr(&o).contains("unknown scenario `storm`"),
        "{}",
        stderr(&o)
    );
    let o = graphscaler(&["eval", "--duration", "4 days"]);
    assert!(!o.status.success());

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[twin]\nstep_s = 0.0\n[slo]\nerror_rate = 2.0\n[pipeline]\nready_after_s = nan\n\
         [pipeline.kafka_properties]\n\"group.id\" = \"other\"\n\"sasl.password\" = \" \"\n",
    )
    .unwrap();
    let o = graphscaler(&["--config", cfg.to_str().unwrap(), "config"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("twin.step_s") && e.contains("slo.error_rate"),
        "{e}"
    );
    assert!(e.contains("pipeline.ready_after_s must be"), "{e}");
    assert!(
        e.contains("pipeline.kafka_properties: `group.id` is not passed to the Kafka clients"),
        "{e}"
    );
    assert!(
        e.contains("pipeline.kafka_properties: `sasl.password` is empty"),
        "{e}"
    );
    // Security settings are accepted and shown.
    std::fs::write(
        &cfg,
        "[pipeline.kafka_properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n",
    )
    .unwrap();
    let o = graphscaler(&["--config", cfg.to_str().unwrap(), "config"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("SCRAM-SHA-512"), "{}", stdout(&o));

    // Environment variables override the file and the defaults.
    let o = graphscaler_with(
        &["config"],
        &[
            ("GRAPHSCALER_SLO__LATENCY_MS", "321.5"),
            ("GRAPHSCALER_LEARN__TRAIN__LEARNING_RATE", "2.5e-4"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("latency_ms = 321.5"), "{out}");
    // Exponent notation, as TOML writes it, is a number too.
    assert!(out.contains("learning_rate = 0.00025\n"), "{out}");
    // A value of the wrong type names the variable's key.
    let o = graphscaler_with(
        &["config"],
        &[("GRAPHSCALER_LEARN__TRAIN__LEARNING_RATE", "fast")],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("GRAPHSCALER_LEARN__TRAIN__LEARNING_RATE"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_synthetic_topology_round_trips_through_the_file_format() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("synth.json");
    let o = graphscaler(&[
        "twin",
        "synth-topology",
        "--services",
        "60",
        "--out",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = graphscaler(&[
        "twin",
        "run",
        "--policy",
        "hpa",
        "--duration",
        "10m",
        "--no-plots",
        "--topology",
        f.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("synth.json"));
}

/// A generated application of 200 services gets a cluster sized to it (more nodes than the
/// configured five), and on it the tuned HPA meets its SLO on Peak.
#[test]
fn a_generated_application_of_200_services_runs_on_a_cluster_sized_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("app200.json");
    let o = graphscaler(&[
        "twin",
        "synth-topology",
        "--services",
        "200",
        "--out",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("200 services; a cluster of 8 nodes sized for 500.0 rps"),
        "{}",
        stdout(&o)
    );
    let o = graphscaler(&[
        "eval",
        "--topology",
        f.to_str().unwrap(),
        "--policies",
        "tuned-hpa",
        "--scenarios",
        "peak",
        "--replays",
        "1",
        "--duration",
        "1h",
        "--no-plots",
        "--out",
        dir.path().join("e").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut runs = csv::Reader::from_path(dir.path().join("e/runs.csv")).unwrap();
    let header = runs.headers().unwrap().clone();
    let col = header
        .iter()
        .position(|h| h == "slo_violation_pct")
        .unwrap();
    let row = runs.records().next().unwrap().unwrap();
    let slo: f64 = row[col].parse().unwrap();
    assert!(slo < 1.0, "the tuned HPA on 200 services: {slo} %");
}

/// `twin fit` from a recording the pipeline made (the graph job's 30 s snapshots of the twin
/// under the tuned HPA): without a base it names what the snapshots cannot give; with Online
/// Boutique's manifests-derived file as the base it fits the CPU costs (the frontend's within
/// 20 % of the twin's 2.5 ms at this length of recording) and the fitted topology runs.
#[test]
fn a_twin_is_fitted_from_recorded_snapshots_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let o = graphscaler(&[
        "twin",
        "record",
        "--scenario",
        "fluctuating",
        "--duration",
        "2h",
        "--policy",
        "tuned-hpa",
        "--out",
        store.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fitted = dir.path().join("fitted.json");
    let o = graphscaler(&[
        "twin",
        "fit",
        "--from",
        store.to_str().unwrap(),
        "--out",
        fitted.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no --base was given") && stderr(&o).contains("frontend"),
        "{}",
        stderr(&o)
    );
    let o = graphscaler(&[
        "twin",
        "fit",
        "--from",
        store.to_str().unwrap(),
        "--base",
        repo()
            .join("data/topologies/online-boutique.json")
            .to_str()
            .unwrap(),
        "--out",
        fitted.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("entry service: frontend"),
        "{}",
        stdout(&o)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fitted).unwrap()).unwrap();
    let frontend = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "frontend")
        .unwrap();
    let cost = frontend["cpu_cost_ms"].as_f64().unwrap();
    assert!(
        (cost - 2.5).abs() <= 0.5,
        "frontend: {cost} ms\n{}",
        stdout(&o)
    );
    let o = graphscaler(&[
        "twin",
        "run",
        "--duration",
        "10m",
        "--no-plots",
        "--topology",
        fitted.to_str().unwrap(),
        "--out",
        dir.path().join("run").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn record_then_replay_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("store");
    let o = graphscaler(&[
        "twin",
        "record",
        "--scenario",
        "peak",
        "--duration",
        "10m",
        "--workers",
        "2",
        "--out",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("-> 21 snapshots of 30 s") && stdout(&o).contains("21 decided by hpa-"),
        "{}",
        stdout(&o)
    );
    assert!(f.join("part-000000.parquet").is_file());
    let o = graphscaler(&[
        "replay",
        "--snapshots",
        f.to_str().unwrap(),
        "--window",
        "4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("21 snapshots") && text.contains("11 services, 5 nodes, 15 calls"),
        "{text}"
    );
    assert!(text.contains("18 full temporal windows of T = 4"), "{text}");
    assert!(
        text.contains("20 transitions") && text.contains("decisions by policy/hpa-"),
        "{text}"
    );
    // Recording into the same store again continues it (a new file, nothing overwritten): the
    // store then holds two runs.
    let first = std::fs::read(f.join("part-000000.parquet")).unwrap();
    let o = graphscaler(&[
        "twin",
        "record",
        "--scenario",
        "peak",
        "--duration",
        "10m",
        "--out",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("part-000001.parquet"), "{}", stdout(&o));
    assert_eq!(std::fs::read(f.join("part-000000.parquet")).unwrap(), first);
    let o = graphscaler(&["replay", "--snapshots", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("42 snapshots in 2 run(s)")
            && stdout(&o).contains("36 full temporal windows"),
        "{}",
        stdout(&o)
    );
    let o = graphscaler(&[
        "replay",
        "--snapshots",
        f.join("part-000001*").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("21 snapshots"), "{}", stdout(&o));
    // A Parquet file of another kind is named, with what differs.
    let runs = dir.path().join("runs");
    let o = graphscaler(&[
        "twin",
        "run",
        "--duration",
        "5m",
        "--no-plots",
        "--out",
        runs.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = graphscaler(&[
        "replay",
        "--snapshots",
        runs.join("runs.parquet").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a graphscaler snapshot file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn run_drives_the_whole_loop_in_process_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("s");
    let other = dir.path().join("t");
    let args = |store: &std::path::Path| {
        [
            "run",
            "--duration",
            "20m",
            "--scenario",
            "rush",
            "--store",
            store.to_str().unwrap(),
        ]
        .map(String::from)
    };
    let run = |store: &std::path::Path| {
        graphscaler(&args(store).iter().map(String::as_str).collect::<Vec<_>>())
    };
    let a = run(&snaps);
    assert!(a.status.success(), "{}", stderr(&a));
    let out = stdout(&a);
    assert!(out.contains("counts match end to end"), "{out}");
    assert!(out.contains("80 ticks"), "{out}");
    let applied = out
        .lines()
        .find(|l| l.trim_start().starts_with("actuate"))
        .unwrap();
    assert!(
        !applied.contains(" 0 applied"),
        "the tuned HPA scaled something: {out}"
    );
    assert!(out.contains("stored 41 windows in 1 file(s)"), "{out}");
    // The same seed, the same run (the wall time aside).
    let b = run(&other);
    let strip = |s: String| -> Vec<String> {
        s.lines()
            .skip(1)
            .filter(|l| !l.contains("snapshots stored in"))
            .map(String::from)
            .collect()
    };
    assert_eq!(strip(out.clone()), strip(stdout(&b)));
    assert_eq!(
        graphscaler_graph::store::read_paths(std::slice::from_ref(&snaps)).unwrap(),
        graphscaler_graph::store::read_paths(std::slice::from_ref(&other)).unwrap(),
        "the same seed, the same store"
    );
    let o = graphscaler(&[
        "replay",
        "--snapshots",
        snaps.to_str().unwrap(),
        "--policy",
        "tuned-hpa",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("actions over 41 snapshots"),
        "{}",
        stdout(&o)
    );
    let o = graphscaler(&[
        "replay",
        "--snapshots",
        snaps.to_str().unwrap(),
        "--publish",
    ]);
    assert!(stderr(&o).contains("--publish needs pipeline.kafka_bootstrap"));
    // A stage without a broker says what to set.
    let o = graphscaler(&["graph"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("pipeline.kafka_bootstrap"),
        "{}",
        stderr(&o)
    );
    let o = graphscaler(&["run", "--policy", "hpa-x"]);
    assert!(
        stderr(&o).contains("unknown policy `hpa-x`"),
        "{}",
        stderr(&o)
    );
}

/// `graphscaler train` of a tiny MLP-PPO: 256 decisions on two 10-minute environments, with
/// `env` set.
fn train_tiny(seed: &str, out: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "train",
        "--encoder",
        "mlp",
        "--algo",
        "ppo",
        "--steps",
        "256",
        "--envs",
        "2",
        "--episode",
        "10m",
        "--seed",
        seed,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    graphscaler_with(&args, env)
}

#[test]
fn train_then_evaluate_and_run_a_learned_policy() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt/tiny");
    let c = ckpt.to_str().unwrap();
    let runs = dir.path().join("runs");
    let o = train_tiny("3", c, &["--tensorboard", runs.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("trained mlp-ppo for 256 decisions"), "{text}");
    for ext in ["safetensors", "json", "csv"] {
        assert!(ckpt.with_extension(ext).is_file(), "{ext}");
    }
    // The diagnostics as TensorBoard scalars too, under CleanRL's names.
    let events: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(events.len(), 1);
    let scalars = graphscaler_learn::tensorboard::read_scalars(&events[0]).unwrap();
    for tag in [
        "losses/approx_kl",
        "losses/explained_variance",
        "charts/mean_reward",
    ] {
        assert!(
            scalars.iter().any(|(t, step, _)| t == tag && *step > 0),
            "{tag}: {scalars:?}"
        );
    }
    let manifest = std::fs::read_to_string(ckpt.with_extension("json")).unwrap();
    assert!(
        manifest.contains("graphscaler train --encoder mlp --algo ppo"),
        "{manifest}"
    );
    // The node types it was trained on, with their features, by CPU model id.
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let types = m["config"]["agent"]["node_type_features"]
        .as_array()
        .unwrap();
    assert_eq!(types.len(), 2, "{manifest}");
    assert_eq!(types[1]["name"], "c2d-standard-8");
    assert_eq!(types[1]["speed"], 1.3);
    // Evaluated beside the tuned HPA, under its own name.
    let spec = format!("tiny={c}");
    let out = dir.path().join("eval");
    let o = graphscaler(&[
        "eval",
        "--policies",
        &spec,
        "--scenarios",
        "peak",
        "--replays",
        "2",
        "--duration",
        "20m",
        "--no-plots",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("tiny") && text.contains("tuned-hpa"),
        "{text}"
    );
    // The whole loop with the learned policy in the policy stage.
    let pol = format!("checkpoint:{c}");
    let o = graphscaler(&[
        "run",
        "--duration",
        "10m",
        "--scenario",
        "rush",
        "--policy",
        &pol,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("counts match end to end"),
        "{}",
        stdout(&o)
    );
    // Again with online learning: the stage learns from the stream and keeps versions; three
    // runs of the same seed learn the same (the same updates, verdicts and figures).
    let online_run = |i: usize| {
        let online = dir.path().join(format!("online-{i}"));
        let conf = dir.path().join(format!("online-{i}.toml"));
        std::fs::write(
            &conf,
            format!(
                "[learn.online]\nenabled = true\ndir = \"{}\"\nupdate_every = 32\nminibatch = 16\nrollback_ticks = 0\nmin_gain = -1e9\nmax_kl = 10.0\n",
                online.display()
            ),
        )
        .unwrap();
        let o = graphscaler(&[
            "run",
            "--config",
            conf.to_str().unwrap(),
            "--duration",
            "30m",
            "--scenario",
            "rush",
            "--policy",
            &pol,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = stdout(&o);
        assert!(
            text.contains("counts match end to end") && text.contains("online learning:"),
            "{text}"
        );
        assert!(online.join("v0000.safetensors").is_file());
        assert!(online.join("v0001.safetensors").is_file(), "{text}");
        let csv = std::fs::read_to_string(online.join("updates.csv")).unwrap();
        assert!(
            csv.lines().count() >= 2 && csv.contains(",promoted,"),
            "{csv}"
        );
        // What the run did, without its wall time and its directory's name.
        let did: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| l.replace(&online.display().to_string(), "DIR"))
            .collect();
        (did, csv)
    };
    let first = online_run(1);
    assert_eq!(online_run(2), first);
    assert_eq!(online_run(3), first);
    // A second stage of training from the first one's weights.
    let again = dir.path().join("ckpt/again");
    let o = train_tiny(
        "4",
        again.to_str().unwrap(),
        &["--init", c],
        &[("GRAPHSCALER_LEARN__REWARD__W_SLO", "7")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = std::fs::read_to_string(again.with_extension("json")).unwrap();
    // The manifest's command has the start and the settings given through the environment.
    assert!(
        manifest.contains(&format!("--init {c}"))
            && manifest.contains("GRAPHSCALER_LEARN__REWARD__W_SLO=7 graphscaler train")
            && manifest.contains("\"w_slo\": 7.0"),
        "{manifest}"
    );
    let o = graphscaler(&[
        "train",
        "--encoder",
        "gat",
        "--steps",
        "256",
        "--init",
        c,
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not fit"), "{}", stderr(&o));
    // A missing checkpoint, an unknown encoder, SAC on the twin: named, nothing run.
    let o = graphscaler(&[
        "eval",
        "--policies",
        "gat-ppo=/nonexistent/x",
        "--scenarios",
        "peak",
        "--replays",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/x.json"), "{}", stderr(&o));
    let o = graphscaler(&["train", "--encoder", "gin"]);
    assert!(
        stderr(&o).contains("unknown encoder `gin`"),
        "{}",
        stderr(&o)
    );
    let o = graphscaler(&["train", "--algo", "ddpg", "--steps", "1"]);
    assert!(
        stderr(&o).contains("unknown algorithm `ddpg`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_shipped_checkpoints_load_and_act() {
    // checkpoints/ holds the four learned baselines; eval finds them by name.
    let dir = tempfile::tempdir().unwrap();
    let o = graphscaler(&[
        "eval",
        "--policies",
        "gat-ppo,mlp-ppo,gcn-sac,dysat-a2c",
        "--scenarios",
        "rush",
        "--replays",
        "1",
        "--duration",
        "15m",
        "--no-plots",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for p in ["gat-ppo", "mlp-ppo", "gcn-sac", "dysat-a2c"] {
        let row = text
            .lines()
            .find(|l| l.contains(p))
            .unwrap_or_else(|| panic!("{p}: {text}"));
        assert!(!row.contains("NaN"), "{row}");
    }
    for f in ["gat-ppo", "mlp-ppo", "gcn-sac", "dysat-a2c"] {
        let m =
            std::fs::read_to_string(repo().join("checkpoints").join(format!("{f}.json"))).unwrap();
        let m: serde_json::Value = serde_json::from_str(&m).unwrap();
        let cmd = m["produced_by"].as_str().unwrap();
        assert!(cmd.contains("graphscaler train --encoder"), "{f}: {cmd}");
    }
}

/// `graphscaler run` (the stages on the in-process bus) and `graphscaler eval` (the served loop)
/// decide the same for the same seed: the same ticks, the same SLO-violating ticks, the same
/// decisions, record for record — for the shipped GAT-PPO (by its mode), for the same weights
/// under a manifest that says they are served by drawing from them (the n-th draw is the same in
/// both), and for the tuned HPA.
#[test]
fn run_and_eval_decide_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = repo().join("checkpoints/gat-ppo");
    let drawn = dir.path().join("drawn");
    std::fs::copy(
        shipped.with_extension("safetensors"),
        drawn.with_extension("safetensors"),
    )
    .unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shipped.with_extension("json")).unwrap())
            .unwrap();
    manifest["act"] = "sample".into();
    std::fs::write(drawn.with_extension("json"), manifest.to_string()).unwrap();
    let drawn = format!("drawn={}", drawn.display());
    let mut decided = std::collections::BTreeMap::new();
    for (spec, seed) in [("gat-ppo", "3"), (drawn.as_str(), "3"), ("tuned-hpa", "2")] {
        let policy = spec.split('=').next().unwrap();
        let ran = dir.path().join(format!("run-{policy}.csv"));
        let o = graphscaler(&[
            "run",
            "--policy",
            spec,
            "--scenario",
            "rush",
            "--seed",
            seed,
            "--duration",
            "1h",
            "--decisions",
            ran.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        let twin = out
            .lines()
            .find(|l| l.contains("ticks,"))
            .unwrap()
            .to_string();
        let out_dir = dir.path().join(format!("eval-{policy}"));
        let o = graphscaler(&[
            "eval",
            "--policies",
            spec,
            "--scenarios",
            "rush",
            "--replays",
            "1",
            "--seed",
            seed,
            "--duration",
            "1h",
            "--no-plots",
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let rows = |p: &Path| -> Vec<graphscaler_eval::report::DecisionRow> {
            csv::Reader::from_path(p)
                .unwrap()
                .deserialize()
                .map(|r| r.unwrap())
                .collect()
        };
        let evaluated: Vec<_> = rows(&out_dir.join("decisions.csv"))
            .into_iter()
            .filter(|r| r.policy == policy)
            .collect();
        let streamed = rows(&ran);
        assert!(streamed.len() > 5, "{policy} acts: {streamed:?}");
        assert_eq!(evaluated, streamed, "{policy}");
        let what: Vec<(String, String)> = streamed
            .iter()
            .map(|r| (format!("{} {}", r.at_s, r.service), r.action.clone()))
            .collect();
        decided.insert(policy.to_string(), what);
        let mut runs = csv::Reader::from_path(out_dir.join("runs.csv")).unwrap();
        let header = runs.headers().unwrap().clone();
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        let row = runs
            .records()
            .map(|r| r.unwrap())
            .find(|r| &r[col("policy")] == policy)
            .unwrap();
        let expected = format!(
            "{} ticks, {} of them violating the SLO",
            &row[col("ticks")],
            &row[col("slo_violated_ticks")]
        );
        assert!(twin.contains(&expected), "{twin} vs {expected}");
    }
    // The manifest's rule was followed: on the same seed, the draws are not the mode's decisions.
    assert!(
        decided["drawn"] != decided["gat-ppo"],
        "the manifest names `sample`, yet its {} decisions are the mode's",
        decided["drawn"].len()
    );
}

/// The libraries the dynamic loader opens for `bin args` (glibc's `LD_DEBUG=libs`).
#[cfg(target_os = "linux")]
fn libraries_loaded(bin: &str, args: &[&str]) -> (Output, String) {
    let o = Command::new(bin)
        .args(args)
        .current_dir(repo())
        .env_remove("RUST_LOG")
        .env("LD_DEBUG", "libs")
        .output()
        .expect("the binary runs");
    let loaded = stderr(&o)
        .lines()
        .filter(|l| l.contains("calling init:"))
        .map(|l| l.rsplit('/').next().unwrap_or(l).to_string())
        .collect::<Vec<_>>()
        .join(" ");
    (o, loaded)
}

#[cfg(target_os = "linux")]
#[test]
fn only_a_learned_policy_or_training_loads_libtorch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let gs = env!("CARGO_BIN_EXE_graphscaler");
    // The HPA on the twin and a configuration error: `graphscaler` alone, no libtorch.
    let (o, loaded) = libraries_loaded(
        gs,
        &[
            "twin",
            "run",
            "--policy",
            "hpa",
            "--duration",
            "10m",
            "--no-plots",
            "--out",
            out,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!loaded.contains("libtorch_cpu"), "loaded: {loaded}");
    let (o, loaded) = libraries_loaded(gs, &["eval", "--policies", "hpa,magic"]);
    assert!(!o.status.success());
    assert!(!loaded.contains("libtorch_cpu"), "loaded: {loaded}");
    // A learned policy: `graphscaler` re-executes graphscaler-learn, which loads it.
    let (o, loaded) = libraries_loaded(
        gs,
        &[
            "eval",
            "--policies",
            "gat-ppo",
            "--scenarios",
            "peak",
            "--replays",
            "1",
            "--duration",
            "5m",
            "--no-plots",
            "--out",
            out,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(loaded.contains("libtorch_cpu"), "loaded: {loaded}");
    assert!(stdout(&o).contains("gat-ppo"), "{}", stdout(&o));
    // Recording a learned policy's snapshots goes the same way.
    let snaps = dir.path().join("gat-store");
    let (o, loaded) = libraries_loaded(
        gs,
        &[
            "twin",
            "record",
            "--policy",
            "gat-ppo",
            "--duration",
            "5m",
            "--out",
            snaps.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        loaded.contains("libtorch_cpu") && snaps.join("part-000000.parquet").is_file(),
        "loaded: {loaded}"
    );
}

/// The store survives the process being killed: every window closed before the kill reads
/// back, in order, a second run continues the store in new files, and `train --from` learns
/// from the store written across both.
#[test]
fn a_killed_run_loses_no_closed_window_of_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut child = Command::new(env!("CARGO_BIN_EXE_graphscaler"))
        .args(["run", "--duration", "24h", "--scenario", "peak", "--store"])
        .arg(&store)
        .current_dir(repo())
        .env("GRAPHSCALER_PIPELINE__STORE_WINDOWS_PER_FILE", "10")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while graphscaler_graph::store::files_of(&store).map_or(0, |f| f.len()) < 3 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "the store never reached three files"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let rows = graphscaler_graph::store::read_paths(std::slice::from_ref(&store)).unwrap();
    assert!(rows.len() >= 21, "{} windows", rows.len());
    for (i, w) in rows.windows(2).enumerate() {
        assert_eq!(
            w[1].snapshot.time_s - w[0].snapshot.time_s,
            30.0,
            "window {i} is followed by the next one"
        );
    }
    assert!(rows[..20]
        .iter()
        .all(|t| t.decision.is_some() && t.reward.is_some()));
    let o = graphscaler(&[
        "run",
        "--duration",
        "5m",
        "--scenario",
        "peak",
        "--seed",
        "9",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = graphscaler_graph::store::files_of(&store).unwrap();
    let o = graphscaler(&[
        "replay",
        "--snapshots",
        files.last().unwrap().to_str().unwrap(),
    ]);
    assert!(stdout(&o).contains("11 snapshots"), "{}", stdout(&o));
    // The store written across the kill and the second run is one training set: `train --from`
    // reads every window of both runs.
    let all = graphscaler_graph::store::read_paths(std::slice::from_ref(&store)).unwrap();
    assert_eq!(all.len(), rows.len() + 11);
    let o = graphscaler(&[
        "train",
        "--encoder",
        "mlp",
        "--from",
        store.to_str().unwrap(),
        "--steps",
        "0",
        "--bc-epochs",
        "1",
        "--out",
        dir.path().join("bc").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = format!("{} rows in 2 run(s)", all.len());
    assert!(
        stdout(&o).contains(&said) || stderr(&o).contains(&said),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// `hpa-sweep` writes the HPA frontier per scenario; `eval --frontier` places each policy
/// against it, by the numbers and in a plot.
#[test]
fn the_hpa_frontier_and_policies_against_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = graphscaler(&[
        "hpa-sweep",
        "--targets",
        "40,60,90",
        "--scenarios",
        "rush",
        "--replays",
        "2",
        "--duration",
        "20m",
        "--out",
        out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("the HPA frontier per scenario"), "{text}");
    let f = dir.path().join("frontier.csv");
    let points = graphscaler_eval::sweep::read_frontier(&f).unwrap();
    assert_eq!(points.len(), 3);
    assert!(points.iter().any(|p| p.pareto));
    assert!(dir.path().join("frontier-rush.png").is_file());
    let o = graphscaler(&[
        "eval",
        "--policies",
        "static,hpa-60",
        "--scenarios",
        "rush",
        "--replays",
        "2",
        "--duration",
        "20m",
        "--frontier",
        f.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let line = |p: &str| {
        text.lines()
            .find(|l| {
                let mut w = l.split_whitespace();
                w.next() == Some("rush") && w.next() == Some(p)
            })
            .unwrap_or_else(|| panic!("no row for {p}: {text}"))
            .to_string()
    };
    // hpa-60 is a point of the sweep (the same seeds, the same runs): on the frontier its gap
    // is 0, and above it if another target dominates it.
    let p60 = points.iter().find(|p| p.target == 60).unwrap();
    let gap: f64 = line("hpa-60")
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    if p60.pareto {
        assert!(gap.abs() < 0.005, "{text}");
    } else {
        assert!(gap > 0.0, "{text}");
    }
    assert!(!line("static").is_empty());
    assert!(text.contains("plotted to"), "{text}");
    // Not a frontier file: named.
    let o = graphscaler(&[
        "eval",
        "--policies",
        "static",
        "--scenarios",
        "rush",
        "--replays",
        "1",
        "--duration",
        "5m",
        "--no-plots",
        "--frontier",
        dir.path().join("runs.csv").to_str().unwrap(),
        "--out",
        out,
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a frontier point"),
        "{}",
        stderr(&o)
    );
}

/// `train --from` learns from a store written by the pipeline's graph stage (`run --store`) and by
/// `twin record`: the clone alone with `--steps 0`, or the clone (`<out>-bc`) then fine-tuning on
/// the twin from it, which carries the reward scale the critic was fitted to.
#[test]
fn train_from_a_store_recorded_by_run_and_by_twin_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    let o = graphscaler(&[
        "run",
        "--duration",
        "1h",
        "--scenario",
        "rush",
        "--policy",
        "tuned-hpa",
        "--store",
        s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = graphscaler(&[
        "twin",
        "record",
        "--policy",
        "tuned-hpa",
        "--scenario",
        "fluctuating",
        "--duration",
        "1h",
        "--out",
        s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let clone = dir.path().join("ckpt/clone");
    let c = clone.to_str().unwrap();
    let o = graphscaler(&[
        "train",
        "--encoder",
        "mlp",
        "--from",
        s,
        "--steps",
        "0",
        "--bc-epochs",
        "3",
        "--out",
        c,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("in 2 run(s)") && text.contains("by policy/hpa-50"),
        "{text}"
    );
    assert!(
        text.contains("held-out agreement with the recorded decisions"),
        "{text}"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(clone.with_extension("json")).unwrap())
            .unwrap();
    let training = &m["config"]["training"];
    assert!(
        training["reward_norm"]["var"].as_f64().unwrap() > 0.0,
        "{m}"
    );
    assert_eq!(training["bootstrap"]["epochs"], 3);
    assert!(
        training["bootstrap"]["agreement"]["windows"]
            .as_u64()
            .unwrap()
            > 10
    );
    assert_eq!(
        std::fs::read_to_string(clone.with_extension("csv"))
            .unwrap()
            .lines()
            .count(),
        4
    );
    // The clone then fine-tuning: both checkpoints, the second started from the first.
    let tuned = dir.path().join("ckpt/tuned");
    let o = train_tiny(
        "4",
        tuned.to_str().unwrap(),
        &["--from", s, "--bc-epochs", "2"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join("ckpt/tuned-bc.safetensors").is_file());
    // Fine-tuned on the load the store recorded: two 1 h runs in 10 min episodes.
    assert!(
        stdout(&o).contains("fine-tuning load: the recorded entry request rates, 12 episode(s)"),
        "{}",
        stdout(&o)
    );
    let m = std::fs::read_to_string(tuned.with_extension("json")).unwrap();
    assert!(m.contains("tuned-bc") && m.contains("reward_norm"), "{m}");
    let mj: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(mj["config"]["training"]["scenarios"], "recorded");
    assert!(
        mj["produced_by"]
            .as_str()
            .unwrap()
            .contains(&format!("--from {s}")),
        "{m}"
    );
    let o = graphscaler(&[
        "eval",
        "--policies",
        &format!("clone={c}"),
        "--scenarios",
        "rush",
        "--replays",
        "1",
        "--duration",
        "30m",
        "--no-plots",
        "--out",
        dir.path().join("eval").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // SAC, a recorded load without a store and a store of nothing are refused, by name.
    let o = graphscaler(&["train", "--scenario", "recorded", "--steps", "8"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("give --from"), "{}", stderr(&o));
    let o = graphscaler(&["train", "--algo", "sac", "--from", s, "--steps", "0"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("SAC's discrete actor is not bootstrapped"),
        "{}",
        stderr(&o)
    );
    let o = graphscaler(&[
        "train",
        "--from",
        dir.path().join("none").to_str().unwrap(),
        "--steps",
        "0",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("none"), "{}", stderr(&o));
}

/// A training stopped by `--time-limit`, then killed mid-run, resumes with `--resume` and ends
/// as one training: every update logged once, in order, the checkpoint's manifest naming where
/// it resumed, and the saved state gone. Resuming nothing is refused, for SAC as well.
#[test]
fn a_stopped_or_killed_training_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ckpt/long");
    let o_str = out.to_str().unwrap();
    let state = dir.path().join("ckpt/long.resume");
    let env = [("GRAPHSCALER_LEARN__TRAIN__NUM_STEPS", "16")];
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--encoder",
            "mlp",
            "--steps",
            "8192",
            "--envs",
            "2",
            "--episode",
            "10m",
            "--seed",
            "4",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(o_str.to_owned());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&'static str]| {
        let a = args(extra);
        graphscaler_with(&a.iter().map(String::as_str).collect::<Vec<_>>(), &env)
    };
    let o = run(&["--resume"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("nothing to resume") || stderr(&o).contains("no saved training state"),
        "{}",
        stderr(&o)
    );

    // Stopped by the time limit: the state is saved, no checkpoint written.
    let o = run(&["--time-limit", "1s"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("stopped at the time limit after update"),
        "{}",
        stdout(&o)
    );
    assert!(!out.with_extension("json").exists());
    let first = graphscaler_learn::resume::read_state(&state)
        .unwrap()
        .unwrap();
    assert!(first.iteration >= 1 && first.iteration < 256, "{first:?}");

    // Resumed, then killed once it has saved a few more updates.
    let a = args(&["--resume", "--save-every", "1"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_graphscaler"))
        .args(&a)
        .current_dir(repo())
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let s = graphscaler_learn::resume::read_state(&state).ok().flatten();
        if s.is_some_and(|s| s.iteration >= first.iteration + 3) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "no progress saved"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the training ended before the kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let second = graphscaler_learn::resume::read_state(&state)
        .unwrap()
        .unwrap();
    assert_eq!(second.resumed_at, [first.iteration]);

    let o = run(&["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("trained mlp-ppo for 8192 decisions"),
        "{}",
        stdout(&o)
    );
    assert!(!state.exists(), "the state outlived the training");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    let at: Vec<u64> = m["config"]["training"]["resumed_at"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(at.len(), 2, "{m}");
    assert_eq!(at[0], first.iteration as u64);
    assert!(at[1] >= second.iteration as u64);
    assert!(!m["produced_by"].as_str().unwrap().contains("--resume"));
    // The log holds every update once, in order.
    let csv = std::fs::read_to_string(out.with_extension("csv")).unwrap();
    let steps: Vec<u64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(steps, (1..=256).map(|k| 32 * k).collect::<Vec<u64>>());

    // SAC resumes too (its replay buffer in the state: pipelines/learn/tests/twin_env.rs), and
    // likewise refuses to resume nothing.
    let o = graphscaler(&[
        "train",
        "--algo",
        "sac",
        "--resume",
        "--steps",
        "8",
        "--out",
        dir.path().join("sac").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--resume: no saved training state in"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_per_request_file_is_refused_as_a_trace_and_bucketed_into_one_that_replays() {
    let raw = "data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv.csv";
    let o = graphscaler(&[
        "twin",
        "run",
        "--duration",
        "1m",
        "--no-plots",
        "--scenario",
        &format!("trace:{raw}"),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("AzureLLMInferenceTrace_conv.csv")
            && e.contains("line 1")
            && e.contains("graphscaler twin bucket"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let counts = dir.path().join("per-minute.csv");
    let o = graphscaler(&[
        "twin",
        "bucket",
        raw,
        "--column",
        "TIMESTAMP",
        "--bucket-s",
        "60",
        "--out",
        counts.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("59 buckets of 60 s"), "{}", stdout(&o));
    let shipped = std::fs::read_to_string(
        repo().join("data/traces/azure-llm-2023/AzureLLMInferenceTrace_conv_per_minute.csv"),
    )
    .unwrap();
    let ours = std::fs::read_to_string(&counts).unwrap();
    let tail = |text: &str, skip: usize| -> Vec<String> {
        text.lines()
            .skip(1)
            .map(|l| l.split(',').skip(skip).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(tail(&ours, 0), tail(&shipped, 1));
    let out = dir.path().join("run");
    let o = graphscaler(&[
        "twin",
        "run",
        "--duration",
        "10m",
        "--no-plots",
        "--scenario",
        &format!("trace:{}", counts.display()),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_topology_without_cpu_costs_runs_with_a_warning_naming_its_services() {
    let dir = tempfile::tempdir().unwrap();
    let topo = dir.path().join("synthetic.json");
    let o = graphscaler(&[
        "twin",
        "synth-topology",
        "--layered",
        "--services",
        "8",
        "--out",
        topo.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = graphscaler(&[
        "twin",
        "run",
        "--duration",
        "2m",
        "--no-plots",
        "--topology",
        topo.to_str().unwrap(),
        "--out",
        dir.path().join("run").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("synthetic.json")
            && e.contains("services take the default CPU cost per request (1 ms")
            && e.contains("entry"),
        "{e}"
    );
    // Online Boutique gives every service its own: no warning.
    let o = graphscaler(&[
        "twin",
        "run",
        "--duration",
        "2m",
        "--no-plots",
        "--out",
        dir.path().join("ob").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("default CPU cost"), "{}", stderr(&o));
}

/// The shipped policies on an application whose services are not their model's (Online
/// Boutique with `emailservice` renamed, under the same file name): GAT-PPO's weights do not
/// depend on the services, so it serves them, saying once that it is outside its training; the
/// flat MLP-PPO cannot decide on any snapshot, and rather than a run that silently does nothing,
/// the fallback HPA acts, the problem is warned with the services named, and the summary counts
/// every fallback.
#[test]
fn a_graph_policy_transfers_and_one_that_cannot_falls_back_to_the_hpa_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("online-boutique.json");
    let text = std::fs::read_to_string(repo().join("data/topologies/online-boutique.json"))
        .unwrap()
        .replace("emailservice", "mailer");
    std::fs::write(&other, &text).unwrap();
    let shop = dir.path().join("shop.json");
    std::fs::write(&shop, &text).unwrap();
    let run = |policy: &str, topology: &Path| {
        graphscaler(&[
            "run",
            "--policy",
            policy,
            "--topology",
            topology.to_str().unwrap(),
            "--scenario",
            "rush",
            "--duration",
            "20m",
        ])
    };
    // A graph policy transfers: the same weights serve the renamed service, said once.
    let o = run("gat-ppo", &other);
    assert!(o.status.success(), "{}", stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(
        err.matches("serving 11 services it was not trained on (missing [\"emailservice\"], unknown [\"mailer\"]; trained on 11 of `online-boutique`)").count(),
        1,
        "{err}"
    );
    assert!(!err.contains("cannot decide"), "{err}");
    assert!(!out.contains("decided by the fallback"), "{out}");
    // So does it to another topology by name, in an evaluation; the MLP is refused there.
    let eval = |policy: &str| {
        graphscaler(&[
            "eval",
            "--policies",
            policy,
            "--topology",
            shop.to_str().unwrap(),
            "--scenarios",
            "rush",
            "--replays",
            "1",
            "--duration",
            "10m",
            "--out",
            dir.path().join(format!("eval-{policy}")).to_str().unwrap(),
        ])
    };
    let o = eval("gat-ppo");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("serving topology `shop` with a graph policy trained on `online-boutique`"),
        "{}",
        stderr(&o)
    );
    let o = eval("mlp-ppo");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("trained on topology `online-boutique`, not `shop`"),
        "{}",
        stderr(&o)
    );
    // The flat MLP does not transfer: on a renamed service its fallback decides, warned once
    // per streak.
    let o = run("mlp-ppo", &other);
    assert!(o.status.success(), "{}", stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        err.contains("cannot decide")
            && err.contains("missing [\"emailservice\"], unknown [\"mailer\"] (the MLP's input is sized to its 11 services: it does not transfer")
            && err.matches("cannot decide").count() == 1,
        "warned once per streak: {err}"
    );
    assert!(
        out.contains("41 snapshots decided by the fallback `hpa-70` (mlp-ppo could not decide)"),
        "{out}"
    );
    let acted = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("policy    41 snapshots in, "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(acted > 0, "the fallback acted: {out}");
    // A learned fallback is refused before anything runs.
    let o = graphscaler_with(
        &["run", "--policy", "gat-ppo", "--duration", "1m"],
        &[("GRAPHSCALER_PIPELINE__FALLBACK_POLICY", "gat-ppo")],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("pipeline.fallback_policy must be static, hpa, tuned-hpa or hpa-<percent>, got `gat-ppo`"),
        "{}",
        stderr(&o)
    );
}

/// Online Boutique and the shipped traces are compiled in: the twin, the loop and an evaluation
/// on the training load run from a directory with nothing in it, and name what they ran.
/// The shipped GAT-PPO, trained on Online Boutique only, on an application it never saw:
/// DeathStarBench's hotel reservation (17 services, written from its public manifests) at the
/// example configuration's load. The manifests' single replicas violate the SLO in most peak
/// ticks; the graph policy scales it (it acts) and violates in fewer ticks than they do
/// (docs/transfer.md has the full campaign, `scripts/transfer.sh`).
#[test]
fn the_shipped_graph_policy_scales_an_application_it_was_not_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let o = graphscaler(&[
        "eval",
        "--config",
        repo()
            .join("config/examples/hotel-reservation.toml")
            .to_str()
            .unwrap(),
        "--topology",
        repo()
            .join("data/topologies/hotel-reservation.json")
            .to_str()
            .unwrap(),
        "--policies",
        "static,gat-ppo",
        "--scenarios",
        "peak",
        "--replays",
        "1",
        "--duration",
        "40m",
        "--no-plots",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "serving topology `hotel-reservation` with a graph policy trained on `online-boutique`"
        ),
        "{}",
        stderr(&o)
    );
    let mut runs = csv::Reader::from_path(dir.path().join("runs.csv")).unwrap();
    let header = runs.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<_> = runs.records().map(|r| r.unwrap()).collect();
    let of = |policy: &str, name: &str| -> f64 {
        let r = rows.iter().find(|r| &r[col("policy")] == policy).unwrap();
        r[col(name)].parse().unwrap()
    };
    assert!(
        of("static", "slo_violation_pct") > 50.0,
        "the manifests are not sized for this load: {rows:?}"
    );
    assert!(of("gat-ppo", "actions_per_hour") > 0.0, "{rows:?}");
    assert!(
        of("gat-ppo", "slo_violation_pct") < of("static", "slo_violation_pct") / 2.0,
        "{rows:?}"
    );
}

#[test]
fn the_twin_and_its_loads_run_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    let run = |args: &[&str]| {
        let o = graphscaler_in(here, args, &[]);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let out = run(&[
        "twin",
        "run",
        "--duration",
        "2m",
        "--no-plots",
        "--out",
        "t",
    ]);
    assert!(out.contains("online-boutique"), "{out}");
    let out = run(&["run", "--duration", "5m", "--scenario", "peak"]);
    assert!(out.contains("counts match end to end"), "{out}");
    let out = run(&[
        "eval",
        "--policies",
        "static,hpa",
        "--scenarios",
        "bursty-mix",
        "--replays",
        "1",
        "--duration",
        "10m",
        "--no-plots",
        "--out",
        "e",
    ]);
    assert!(
        out.contains("AzureLLMInferenceTrace_conv_per_second") && out.contains("burst"),
        "{out}"
    );
    assert!(here.join("e/runs.csv").exists());
    // A topology file given by path still wins over the compiled-in one, and a missing one is
    // named.
    let o = graphscaler_in(
        here,
        &[
            "twin",
            "run",
            "--duration",
            "2m",
            "--no-plots",
            "--topology",
            "nope.json",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nope.json"), "{}", stderr(&o));
}

/// An evaluation keeps each finished run in its journal: with `--resume` it takes them from
/// there (the same files come out), a run cut short by a kill is run again, another campaign's
/// journal is refused naming what differs, and without `--resume` a campaign starts over.
#[test]
fn a_stopped_evaluation_resumes_from_its_journal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    let eval = |duration: &str, resume: bool| {
        let mut args = vec![
            "eval",
            "--policies",
            "static,hpa",
            "--scenarios",
            "peak",
            "--replays",
            "2",
            "--duration",
            duration,
            "--no-plots",
            "--out",
            out.to_str().unwrap(),
        ];
        if resume {
            args.push("--resume");
        }
        let o = graphscaler(&args);
        (o.status.success(), stdout(&o), stderr(&o))
    };
    let (ok, _, e) = eval("20m", true);
    assert!(ok, "with no journal yet, --resume starts one: {e}");
    let runs = || std::fs::read_to_string(out.join("runs.csv")).unwrap();
    let (csv, journal) = (runs(), out.join("runs.journal"));
    let (ok, o, e) = eval("20m", true);
    assert!(ok && o.contains("resuming: 6 of 6 runs"), "{o}{e}");
    assert_eq!(runs(), csv);
    // A kill in the middle of writing the last run: its record is cut short.
    let len = std::fs::metadata(&journal).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    f.set_len(len - 100).unwrap();
    let (ok, o, e) = eval("20m", true);
    assert!(ok && o.contains("resuming: 5 of 6 runs"), "{o}{e}");
    assert_eq!(runs(), csv, "the run done again gives the same figures");
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), len);
    let (ok, _, e) = eval("30m", true);
    assert!(!ok);
    assert!(
        e.contains("runs.journal") && e.contains("another campaign") && e.contains("duration"),
        "{e}"
    );
    // Without --resume: a new campaign, a new journal.
    let (ok, o, e) = eval("30m", false);
    assert!(ok && !o.contains("resuming"), "{o}{e}");
    let (ok, o, e) = eval("30m", true);
    assert!(ok && o.contains("resuming: 6 of 6 runs"), "{o}{e}");
}

/// `graphscaler train --topology A --topology B`: one training on a distribution of topologies
/// (every batch padded to the largest), recorded in the manifest; a combination that cannot train
/// together is refused with the reason; the policy serves a held-out topology saying it is
/// outside its training, and one of its own topologies without saying so.
#[test]
fn a_policy_trains_on_several_topologies_and_serves_a_held_out_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    for (name, services, seed) in [
        ("small", "5", "1"),
        ("large", "13", "2"),
        ("held", "9", "3"),
    ] {
        let o = graphscaler(&[
            "twin",
            "synth-topology",
            "--services",
            services,
            "--seed",
            seed,
            "--out",
            &path(&format!("{name}.json")),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (small, large, held) = (path("small.json"), path("large.json"), path("held.json"));
    let train = |encoder: &str, algo: &str, envs: &str, out: &str| {
        graphscaler(&[
            "train",
            "--encoder",
            encoder,
            "--algo",
            algo,
            "--steps",
            "192",
            "--envs",
            envs,
            "--episode",
            "10m",
            "--seed",
            "4",
            "--topology",
            &small,
            "--topology",
            &large,
            "--out",
            out,
        ])
    };
    let out = path("dist");
    let o = train("gat", "ppo", "3", &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("training on 2 topologies (small, large)"),
        "{}",
        stdout(&o)
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{out}.json")).unwrap()).unwrap();
    let trained = manifest["config"]["agent"]["topologies"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = trained
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["small", "large"]);
    assert_eq!(trained[0]["services"].as_array().unwrap().len(), 5);
    assert_eq!(trained[1]["services"].as_array().unwrap().len(), 13);
    assert_eq!(manifest["topology"], "small");
    assert!(
        manifest["produced_by"]
            .as_str()
            .unwrap()
            .contains(&format!("--topology {small} --topology {large}")),
        "{manifest}"
    );
    // What cannot train together, refused with the reason.
    let refused = path("refused");
    for (encoder, algo, envs, says) in [
        ("gat", "sac", "3", "SAC's replay buffer"),
        ("mlp", "ppo", "3", "the MLP's input is sized"),
        ("gat", "ppo", "1", "need at least as many environments"),
    ] {
        let o = train(encoder, algo, envs, &refused);
        assert!(!o.status.success(), "{encoder}-{algo}");
        assert!(
            stderr(&o).contains(says),
            "{encoder}-{algo}: {}",
            stderr(&o)
        );
    }
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&large).unwrap()).unwrap();
    other["cluster"]["node_types"][0]["name"] = "m5.xlarge".into();
    let renamed = path("renamed.json");
    std::fs::write(&renamed, other.to_string()).unwrap();
    let o = graphscaler(&[
        "train",
        "--steps",
        "64",
        "--envs",
        "2",
        "--episode",
        "10m",
        "--topology",
        &small,
        "--topology",
        &renamed,
        "--out",
        &out,
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("topology `renamed`") && stderr(&o).contains("the same node types"),
        "{}",
        stderr(&o)
    );
    // Served on a held-out topology: said; on one of its own: not.
    let eval = |topology: &str, to: &str| {
        graphscaler(&[
            "eval",
            "--topology",
            topology,
            "--policies",
            &format!("dist={out}"),
            "--scenarios",
            "peak",
            "--replays",
            "1",
            "--duration",
            "20m",
            "--no-plots",
            "--out",
            &path(to),
        ])
    };
    let o = eval(&held, "on-held");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "serving topology `held` with a graph policy trained on `small`, `large`: outside its training"
        ),
        "{}",
        stderr(&o)
    );
    let o = eval(&large, "on-large");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("outside its training"),
        "{}",
        stderr(&o)
    );
    assert!(
        std::fs::read_to_string(dir.path().join("on-large/runs.csv"))
            .unwrap()
            .contains("dist"),
    );
}
