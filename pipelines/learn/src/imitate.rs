//! Recorded decisions in the learned action space: what behaviour cloning from a store learns.
//!
//! A stored row holds the absolute actions a policy (the tuned HPA, say) published on a snapshot
//! ([`graphscaler_graph::store::Transition`]). The agent instead takes up to
//! `decisions_per_tick` hybrid sub-decisions per snapshot, each under the masks of
//! [`DecisionState`], and ends the tick with *nothing*. [`imitate`] turns the one into the other,
//! through the same [`DecisionState`] the environments and the policy stage use:
//!
//! * `SetReplicas { n }` → Δreplicas = `n − spec`, clamped to ±2 (said so in the notes: the
//!   action space cannot jump further in one decision); `ChangeReplicas` clamped the same way.
//! * `SetCpuLimit { m }` → Δcpu = `log2(m / limit)`, clamped to [−1, 1]; `ChangeCpuQuota` as is.
//! * `PreferNodeType` → that node type; without one, the type most of the service's pods run on
//!   (the HPA never prefers one, and another choice would be a preference it did not make); a
//!   service with no pod placed takes type 0, noted.
//! * A change the masks forbid (a service in its cooldown, a Δ beyond the replica bounds) is left
//!   out and noted; so is a change past `decisions_per_tick`.

use graphscaler_schemas::{Action, ActionKind, Snapshot};

use crate::decide::{ActionRules, DecisionState};
use crate::policy::{HybridAction, SampleMask, DELTAS};

/// A recorded decision as the agent would have taken it.
#[derive(Debug, Clone, PartialEq)]
pub struct Imitated {
    /// Each sub-decision with the masks it was taken under, in order; "nothing" last unless the
    /// tick's decisions ran out.
    pub steps: Vec<(SampleMask, HybridAction)>,
    /// What of the recorded decision the action space could not express, and how it was handled.
    pub notes: Vec<String>,
}

/// The node type most of service `s`'s pods run on (`None`: no pod placed).
fn majority_type(snap: &Snapshot, s: usize, types: usize) -> Option<usize> {
    let mut count = vec![0.0f32; types.max(1)];
    for (e, (&src, &dst)) in snap.runs_on.src.iter().zip(&snap.runs_on.dst).enumerate() {
        if src as usize != s {
            continue;
        }
        let Some(x) = snap.node_x.get(dst as usize) else {
            continue;
        };
        let t = (x[2].round().max(0.0) as usize).min(types.saturating_sub(1));
        count[t] += snap
            .runs_on
            .attr
            .get(e)
            .and_then(|a| a.first())
            .copied()
            .unwrap_or(1.0);
    }
    let (best, n) = count.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
    (*n > 0.0).then_some(best)
}

/// The sub-decisions of `actions` (a stored decision) on `snap`. `state` must have been
/// [`DecisionState::tick`]ed on `snap` and carries the cooldowns of the rows before it.
pub fn imitate(
    state: &mut DecisionState,
    rules: &ActionRules,
    snap: &Snapshot,
    actions: &[Action],
) -> Imitated {
    let mut out = Imitated {
        steps: vec![],
        notes: vec![],
    };
    let k = state.node_types.len();
    // The recorded actions per service, in the order first named.
    let mut order: Vec<usize> = vec![];
    let mut per: Vec<(i64, f64, Option<usize>)> = vec![(0, 0.0, None); snap.services.len()];
    for a in actions {
        let Some(s) = snap.services.iter().position(|n| *n == a.service) else {
            out.notes
                .push(format!("`{}` is not in the snapshot: left out", a.service));
            continue;
        };
        let Some(spec) = snap.replicas_spec.get(s).map(|&r| i64::from(r)) else {
            out.notes.push(format!(
                "`{}`: the snapshot has no replica count for it: left out",
                a.service
            ));
            continue;
        };
        if !order.contains(&s) {
            order.push(s);
        }
        let entry = &mut per[s];
        match &a.kind {
            ActionKind::SetReplicas { replicas } => entry.0 = i64::from(*replicas) - spec,
            ActionKind::ChangeReplicas { delta } => entry.0 = i64::from(*delta),
            ActionKind::SetCpuLimit { millicores } => {
                match snap
                    .cpu_limit_cores
                    .get(s)
                    .filter(|l| l.is_finite() && **l > 0.0)
                {
                    Some(l) => {
                        entry.1 = (f64::from(*millicores) / (f64::from(*l) * 1000.0)).log2();
                    }
                    None => out.notes.push(format!(
                        "`{}`: a CPU limit without the snapshot's limit to compare: left out",
                        a.service
                    )),
                }
            }
            ActionKind::ChangeCpuQuota { delta } => entry.1 = *delta,
            ActionKind::PreferNodeType { node_type } => {
                entry.2 = node_type
                    .as_ref()
                    .and_then(|t| state.node_types.iter().position(|n| n == t));
            }
        }
    }
    for s in order {
        let (mut d, mut c, pref) = per[s];
        if !(-2..=2).contains(&d) {
            out.notes.push(format!(
                "`{}`: Δreplicas {d} clamped to {}",
                snap.services[s],
                d.clamp(-2, 2)
            ));
            d = d.clamp(-2, 2);
        }
        if !c.is_finite() {
            c = 0.0;
        }
        c = c.clamp(-1.0, 1.0);
        if d == 0 && c.abs() < rules.cpu_deadband && pref.is_none() {
            continue;
        }
        if !state.may_decide(rules) {
            out.notes.push(format!(
                "`{}`: past decisions_per_tick ({}): left out",
                snap.services[s], rules.decisions_per_tick
            ));
            continue;
        }
        let t = match pref.or_else(|| majority_type(snap, s, k)) {
            Some(t) => t.min(k.saturating_sub(1)),
            None => {
                out.notes.push(format!(
                    "`{}`: no pod placed and no preference recorded: node type 0 taken",
                    snap.services[s]
                ));
                0
            }
        };
        let mask = state.mask(rules, snap, None);
        let j = DELTAS.iter().position(|x| *x == d).unwrap_or(2);
        if !mask.pairs.get(s * k + t).copied().unwrap_or(false)
            || !mask.replicas.get(s * 5 + j).copied().unwrap_or(false)
        {
            out.notes.push(format!(
                "`{}`: Δreplicas {d} on node type {t} is masked here (cooldown, bounds or a missing metric): left out",
                snap.services[s]
            ));
            continue;
        }
        let a = HybridAction::Change {
            service: s as i64,
            node_type: t as i64,
            delta_replicas: d,
            delta_cpu: c,
        };
        state.apply(rules, &a);
        out.steps.push((mask, a));
    }
    if state.may_decide(rules) {
        let mask = state.mask(rules, snap, None);
        state.apply(rules, &HybridAction::Nothing);
        out.steps.push((mask, HybridAction::Nothing));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use graphscaler_twin::{Shape, Twin};

    fn snapshot() -> Snapshot {
        let mut twin = Twin::online_boutique(Shape::Peak, 600.0, 1).unwrap();
        let mut obs = None;
        for _ in 0..10 {
            obs = Some(twin.advance().0);
        }
        Snapshot::from_observation(&obs.unwrap())
    }

    fn rules() -> ActionRules {
        ActionRules {
            decisions_per_tick: 3,
            cooldown_s: 60.0,
            cpu_deadband: 0.05,
            min_replicas: 1,
            max_replicas: 10,
        }
    }

    fn state(snap: &Snapshot) -> DecisionState {
        let types = (0..3).map(|i| format!("t{i}")).collect();
        let mut st = DecisionState::new(snap.services.clone(), types);
        st.tick(snap);
        st
    }

    #[test]
    fn an_hpa_decision_becomes_sub_decisions_then_nothing() {
        let snap = snapshot();
        let r = rules();
        let mut st = state(&snap);
        let fe = snap.services.iter().position(|s| s == "frontend").unwrap();
        let spec = snap.replicas_spec[fe];
        let cart = snap
            .services
            .iter()
            .position(|s| s == "cartservice")
            .unwrap();
        let actions = vec![
            Action::new("frontend", ActionKind::SetReplicas { replicas: spec + 5 }),
            Action::new(
                "cartservice",
                ActionKind::SetReplicas {
                    replicas: snap.replicas_spec[cart],
                },
            ),
            Action::new("nosuch", ActionKind::SetReplicas { replicas: 2 }),
        ];
        let im = imitate(&mut st, &r, &snap, &actions);
        assert_eq!(im.steps.len(), 2, "{im:?}");
        let HybridAction::Change {
            service,
            delta_replicas,
            node_type,
            ..
        } = im.steps[0].1
        else {
            panic!("{im:?}")
        };
        assert_eq!((service as usize, delta_replicas), (fe, 2));
        assert_eq!(Some(node_type as usize), majority_type(&snap, fe, 3));
        // The first step's masks are the fresh tick's; the nothing after it sees the change.
        assert_eq!(im.steps[0].0.progress, 0.0);
        assert!(im.steps[1].0.progress > 0.0);
        assert_eq!(im.steps[1].1, HybridAction::Nothing);
        assert!(im.notes.iter().any(|n| n.contains("clamped to 2")));
        assert!(im.notes.iter().any(|n| n.contains("`nosuch`")));
        // The next snapshot within the cooldown: frontend is masked, its change left out.
        let mut later = snap.clone();
        later.time_s += 30.0;
        st.tick(&later);
        let im = imitate(&mut st, &r, &later, &actions[..1]);
        assert_eq!(im.steps.len(), 1);
        assert_eq!(im.steps[0].1, HybridAction::Nothing);
        assert!(im.notes.iter().any(|n| n.contains("masked")), "{im:?}");
    }

    #[test]
    fn doing_nothing_is_one_nothing_and_cpu_limits_become_log_ratios() {
        let snap = snapshot();
        let r = rules();
        let mut st = state(&snap);
        assert_eq!(
            imitate(&mut st, &r, &snap, &[]).steps,
            vec![(state(&snap).mask(&r, &snap, None), HybridAction::Nothing)]
        );
        let mut st = state(&snap);
        let s = snap.services.iter().position(|x| x == "adservice").unwrap();
        let m = (snap.cpu_limit_cores[s] * 2000.0).round() as u32;
        let im = imitate(
            &mut st,
            &r,
            &snap,
            &[Action::new(
                "adservice",
                ActionKind::SetCpuLimit { millicores: m },
            )],
        );
        let HybridAction::Change {
            delta_cpu,
            delta_replicas,
            ..
        } = im.steps[0].1
        else {
            panic!("{im:?}")
        };
        assert_eq!(delta_replicas, 0);
        assert!((delta_cpu - 1.0).abs() < 1e-3, "{delta_cpu}");
    }
}
