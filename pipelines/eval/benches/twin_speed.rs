//! Twin speed: simulated seconds per wall-clock second on one core.
//!
//! What it isolates: the twin's step and observation loop (load generation, scheduling,
//! queues, call-tree latency composition, observation building), with no policy and with the
//! Kubernetes HPA deciding every 15 s. Each case runs `ROUNDS` times on one thread; the median
//! is reported with every round, and the ratio to the goal (100,000x real time, i.e. a 4-hour
//! episode in 0.144 s) is printed beside it.
//!
//! Run: `cargo bench -p graphscaler-eval --bench twin_speed`

use std::time::Instant;

use graphscaler_policy::{Hpa, HpaConfig, Policy, Static};
use graphscaler_twin::{Shape, SloConfig, TickTruth, Topology, Twin, TwinConfig};

const ROUNDS: usize = 7;
const GOAL: f64 = 100_000.0;

/// The twin of `topology` alone, with the default settings (no graph job, no guardrails: see the
/// served loop's benchmark for those), with `policy` deciding on each observation.
fn run_policy(
    topology: &Topology,
    policy: &mut dyn Policy,
    shape: Shape,
    duration_s: f64,
    seed: u64,
) -> Vec<TickTruth> {
    let (twin, slo) = (TwinConfig::default(), SloConfig::default());
    let mut twin = Twin::new(topology.clone(), twin, slo, shape, duration_s, seed)
        .expect("the bench setup is valid");
    let mut ticks = vec![];
    while !twin.done() {
        let (obs, truth) = twin.advance();
        for a in policy.decide(&obs) {
            let _ = twin.apply(&a);
        }
        ticks.push(truth);
    }
    ticks
}

fn case(name: &str, setup: &Topology, duration_s: f64, mut make: impl FnMut() -> Box<dyn Policy>) {
    let mut walls = vec![];
    for round in 0..ROUNDS {
        let mut policy = make();
        let t0 = Instant::now();
        let ticks = run_policy(
            setup,
            policy.as_mut(),
            Shape::Peak,
            duration_s,
            round as u64 + 1,
        );
        walls.push(t0.elapsed().as_secs_f64());
        assert_eq!(ticks.len(), (duration_s / 15.0) as usize);
    }
    let rounds: Vec<String> = walls.iter().map(|w| format!("{:.4}", w)).collect();
    walls.sort_by(f64::total_cmp);
    let median = walls[ROUNDS / 2];
    let speed = duration_s / median;
    println!(
        "{name:<44} {:>6.0} s simulated in {median:>8.4} s (median of {ROUNDS}: [{}])  {speed:>12.0}x real time  ratio to goal {:.2}",
        duration_s,
        rounds.join(", "),
        speed / GOAL
    );
}

fn main() {
    let twin = TwinConfig::default();
    let ob = Topology::online_boutique(&twin.fanout_parameters).expect("Online Boutique topology");
    println!(
        "twin speed, peak shape, one thread (goal: >= {GOAL:.0}x real time for Online Boutique)"
    );
    let s = ob;
    case(
        "online-boutique (11 services), no policy",
        &s,
        4.0 * 3600.0,
        || Box::new(Static),
    );
    let hpa = HpaConfig::default();
    case(
        "online-boutique (11 services), HPA",
        &s,
        4.0 * 3600.0,
        || Box::new(Hpa::new(70, &hpa)),
    );
    let s = Topology::synthetic(1000, 1);
    case(
        "synthetic-1000 (1000 services), no policy",
        &s,
        3600.0,
        || Box::new(Static),
    );
    case("synthetic-1000 (1000 services), HPA", &s, 3600.0, || {
        Box::new(Hpa::new(70, &hpa))
    });
}
