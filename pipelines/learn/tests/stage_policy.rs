//! A learned policy in the policy stage refuses snapshots it cannot trust: no action, counted in
//! its summary, warned once per streak (not once per snapshot). Services it was not trained on
//! are not such a snapshot for a graph policy: it serves them, and its summary says so.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use graphscaler_learn::factory::Checkpoints;
use graphscaler_learn::serve::ActRule;
use graphscaler_policy::Learned;
use graphscaler_schemas::Snapshot;
use graphscaler_twin::{Shape, Twin};

#[test]
fn untrusted_snapshots_get_no_action_and_are_counted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut twin = Twin::online_boutique(Shape::Peak, 900.0, 2).unwrap();
    let mut snaps = vec![];
    while !twin.done() {
        snaps.push(Snapshot::from_observation(&twin.advance().0));
    }
    let learned = Checkpoints {
        dir: root.join("checkpoints"),
        topology: "*".into(),
        act: ActRule::Mode,
        online: None,
    };
    let mut p = learned.build_stage("gat-ppo", None).unwrap();
    assert_eq!(p.summary(), None, "nothing refused yet");
    for s in &snaps[..3] {
        let mut bad = s.clone();
        bad.service_x[0][0] = f32::NAN;
        assert!(p.decide(&bad).is_empty());
    }
    // A snapshot whose parts disagree (a service name without its features) gets nothing.
    let mut broken = snaps[3].clone();
    broken.services.push("zz-extra".into());
    assert!(p.decide(&broken).is_empty());
    // Another cluster's service is served with the same weights, and said.
    let mut other = snaps[4].clone();
    other.services[0] = "not-a-service-of-the-model".into();
    p.decide(&other);
    for s in &snaps[5..] {
        p.decide(s);
    }
    let summary = p.summary().unwrap();
    assert!(
        summary.contains("4 snapshots it could not decide on")
            && summary.contains("serving 11 services it was not trained on"),
        "{summary}"
    );
}
