//! The policy stage on the in-process bus: a slow decision (an online learner's update, say)
//! runs on the policy's own thread, so the async runtime — here a single thread — keeps running
//! its other tasks meanwhile; every snapshot still gets its decision, in order.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use graphscaler_bus::transport::{MemoryBus, Publisher};
use graphscaler_bus::Metrics;
use graphscaler_policy::SnapshotPolicy;
use graphscaler_schemas::events::{ActionsTopic, SnapshotsTopic};
use graphscaler_schemas::{Action, ActionKind, Envelope, Snapshot, Topic};

/// Takes 300 ms per decision and asks for one replica of the first service.
struct Slow;

impl SnapshotPolicy for Slow {
    fn name(&self) -> String {
        "slow".into()
    }
    fn decide(&mut self, snap: &Snapshot) -> Vec<Action> {
        std::thread::sleep(Duration::from_millis(300));
        vec![Action::new(
            snap.services[0].clone(),
            ActionKind::SetReplicas { replicas: 1 },
        )]
    }
    fn summary(&self) -> Option<String> {
        Some("slow and done".into())
    }
}

fn snapshots(n: usize) -> Vec<Snapshot> {
    let mut twin =
        graphscaler_twin::Twin::online_boutique(graphscaler_twin::Shape::Peak, 600.0, 1).unwrap();
    (0..n)
        .map(|_| Snapshot::from_observation(&twin.advance().0))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_slow_decision_leaves_the_runtime_free() {
    let bus = MemoryBus::default();
    let publisher = Publisher::Memory(bus.clone());
    let sub = bus.subscribe(&[SnapshotsTopic::NAME]);
    let mut actions = bus.subscribe(&[ActionsTopic::NAME]);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let stage = tokio::spawn(graphscaler_policy::stage::policy(
        sub,
        publisher.clone(),
        Box::new(Slow),
        Metrics::new("policy"),
        stop,
    ));
    let ticks = Arc::new(AtomicU64::new(0));
    let t = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            t.fetch_add(1, Ordering::Relaxed);
        }
    });
    let snaps = snapshots(3);
    for s in &snaps {
        let env = Envelope::new("test", s.time_s, s.window_s, s.clone());
        publisher.publish::<SnapshotsTopic>(&env).await.unwrap();
    }
    let started = ticks.load(Ordering::Relaxed);
    let mut got = vec![];
    while got.len() < 3 {
        if let Some(m) = actions.next(Duration::from_secs(5)).await.unwrap() {
            got.push(m.decode::<ActionsTopic>().unwrap());
            actions.commit(&m).unwrap();
        }
    }
    // Three decisions of 300 ms each: a runtime blocked by them would have ticked about never.
    let during = ticks.load(Ordering::Relaxed) - started;
    assert!(
        during >= 20,
        "the runtime ticked {during} times in 900 ms of decisions"
    );
    let stamps: Vec<f64> = got.iter().map(|e| e.observed_at_s).collect();
    let want: Vec<f64> = snaps.iter().map(|s| s.time_s).collect();
    assert_eq!(stamps, want, "one decision per snapshot, in order");
    stop_tx.send(true).unwrap();
    let sum = stage.await.unwrap().unwrap();
    assert_eq!((sum.snapshots, sum.actions), (3, 3));
    assert_eq!(sum.note.as_deref(), Some("slow and done"));
    ticker.abort();
}

/// Panics on its second snapshot.
struct Fragile(u32);

impl SnapshotPolicy for Fragile {
    fn name(&self) -> String {
        "fragile".into()
    }
    fn decide(&mut self, _: &Snapshot) -> Vec<Action> {
        self.0 += 1;
        assert!(self.0 < 2, "fragile broke on snapshot {}", self.0);
        vec![]
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_policy_that_panics_ends_the_stage_with_its_message() {
    let bus = MemoryBus::default();
    let publisher = Publisher::Memory(bus.clone());
    let sub = bus.subscribe(&[SnapshotsTopic::NAME]);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let stage = tokio::spawn(graphscaler_policy::stage::policy(
        sub,
        publisher.clone(),
        Box::new(Fragile(0)),
        Metrics::new("policy"),
        stop,
    ));
    for s in snapshots(2) {
        let env = Envelope::new("test", s.time_s, s.window_s, s);
        publisher.publish::<SnapshotsTopic>(&env).await.unwrap();
    }
    let e = stage.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("fragile broke on snapshot 2"), "{e}");
}

/// Cannot decide on its first `refuse` snapshots (as a learned policy on services that are not
/// its model's); then asks for nothing.
struct Picky {
    refuse: usize,
    seen: usize,
}

impl SnapshotPolicy for Picky {
    fn name(&self) -> String {
        "picky".into()
    }
    fn decide(&mut self, snap: &Snapshot) -> Vec<Action> {
        self.try_decide(snap).unwrap_or_default()
    }
    fn try_decide(&mut self, snap: &Snapshot) -> Result<Vec<Action>, String> {
        self.seen += 1;
        if self.seen <= self.refuse {
            Err(format!(
                "services {:?} are not the model's",
                &snap.services[..2]
            ))
        } else {
            Ok(vec![])
        }
    }
}

/// A policy that cannot decide never does nothing in silence: its fallback (an HPA) decides on
/// those snapshots, its actions and decision records carry the fallback's name and the reason,
/// and `graphscaler_policy_fallback_total` counts each (`graphscaler_policy_actions_total` their
/// actions, under the fallback's name); when the policy decides again the
/// fallback stands down.
#[tokio::test(flavor = "current_thread")]
async fn the_fallback_acts_when_the_policy_cannot_decide_and_is_counted() {
    use graphscaler_policy::{HpaConfig, PolicySpec, WithFallback};
    use graphscaler_schemas::events::DecisionsTopic;
    let bus = MemoryBus::default();
    let publisher = Publisher::Memory(bus.clone());
    let sub = bus.subscribe(&[SnapshotsTopic::NAME]);
    let mut actions = bus.subscribe(&[ActionsTopic::NAME]);
    let mut decisions = bus.subscribe(&[DecisionsTopic::NAME]);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // A 1 % CPU target: any load is above it, so the HPA asks for more replicas at once.
    let hpa = PolicySpec::HpaAt(1)
        .build_stage(&HpaConfig::default(), None)
        .unwrap();
    let policy = WithFallback::new(Box::new(Picky { refuse: 4, seen: 0 }), hpa);
    let metrics = Metrics::new("policy");
    let stage = tokio::spawn(graphscaler_policy::stage::policy(
        sub,
        publisher.clone(),
        Box::new(policy),
        metrics.clone(),
        stop,
    ));
    let snaps = snapshots(6);
    for s in &snaps {
        let env = Envelope::new("test", s.time_s, s.window_s, s.clone());
        publisher.publish::<SnapshotsTopic>(&env).await.unwrap();
    }
    let mut records = vec![];
    while records.len() < 6 {
        let m = decisions
            .next(Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        records.push(m.decode::<DecisionsTopic>().unwrap());
        decisions.commit(&m).unwrap();
    }
    for r in &records[..4] {
        assert_eq!(r.payload.policy, "policy/hpa-1");
        let why = r.payload.fallback.as_deref().unwrap();
        assert!(why.contains("are not the model's"), "{why}");
    }
    for r in &records[4..] {
        assert_eq!(r.payload.policy, "policy/picky");
        assert_eq!(r.payload.fallback, None);
        assert!(r.payload.actions.is_empty());
    }
    let acted: usize = records[..4].iter().map(|r| r.payload.actions.len()).sum();
    assert!(
        acted > 0,
        "the fallback HPA acted on none of the refused snapshots"
    );
    let mut sources = vec![];
    while let Some(m) = actions.next(Duration::from_millis(200)).await.unwrap() {
        sources.push(m.decode::<ActionsTopic>().unwrap().source);
        actions.commit(&m).unwrap();
    }
    assert_eq!(sources.len(), acted);
    assert!(sources.iter().all(|s| s == "policy/hpa-1"), "{sources:?}");
    assert_eq!(metrics.total("graphscaler_policy_fallback_total"), 4.0);
    // Every published action is counted by the policy that decided it, its service and part.
    assert_eq!(
        metrics.total("graphscaler_policy_actions_total"),
        acted as f64
    );
    let exposition = Metrics::render(&[&metrics]);
    let first = &records[0].payload.actions[0];
    assert!(
        exposition.contains(&format!(
            "graphscaler_policy_actions_total{{stage=\"policy\",policy=\"hpa-1\",service=\"{}\",part=\"replicas\"}}",
            first.service
        )),
        "{exposition}"
    );
    stop_tx.send(true).unwrap();
    let sum = stage.await.unwrap().unwrap();
    assert_eq!(sum.fallbacks, 4);
    let note = sum.note.unwrap();
    assert!(
        note.contains("4 snapshots decided by the fallback `hpa-1` (picky could not decide)"),
        "{note}"
    );
}
