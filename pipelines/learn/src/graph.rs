//! A snapshot as tensors: node features per type, and per relation an edge index (`[2, E]`,
//! int64, source row then destination row) and edge attributes (`[E, F]`).

use graphscaler_schemas::snapshot::{global_feature, node_feature, service_feature, EdgeSet};
use graphscaler_schemas::Snapshot;
use tch::{Device, Kind, Tensor};

/// The service node type.
pub const SERVICE: &str = "service";
/// The machine node type.
pub const NODE: &str = "node";

/// A relation `(source type, name, destination type)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Relation {
    /// Source node type.
    pub src: &'static str,
    /// Relation name.
    pub name: &'static str,
    /// Destination node type.
    pub dst: &'static str,
}

impl Relation {
    /// `(service, calls, service)`: [rps, p95, error rate].
    pub const CALLS: Relation = Relation {
        src: SERVICE,
        name: "calls",
        dst: SERVICE,
    };
    /// `(service, runs_on, node)`: [pods].
    pub const RUNS_ON: Relation = Relation {
        src: SERVICE,
        name: "runs_on",
        dst: NODE,
    };
    /// `(node, hosts, service)`: [pods].
    pub const HOSTS: Relation = Relation {
        src: NODE,
        name: "hosts",
        dst: SERVICE,
    };
    /// The three, in this order.
    pub const ALL: [Relation; 3] = [Relation::CALLS, Relation::RUNS_ON, Relation::HOSTS];

    /// PyG's `HeteroConv` key for it: `<src___name___dst>`.
    pub fn key(&self) -> String {
        format!("<{}___{}___{}>", self.src, self.name, self.dst)
    }

    /// Width of its edge attributes.
    pub fn edge_dim(&self) -> i64 {
        if self.name == "calls" {
            3
        } else {
            1
        }
    }
}

/// The heterogeneous graph of one snapshot, or of several as one disjoint union (PyG's
/// `Batch`): graph `b`'s services are rows `b·S .. (b+1)·S` of `x_service`, its machines rows
/// `b·N .. (b+1)·N` of `x_node`, and its edges index those rows. Every graph of a batch has the
/// same `S` and `N`, so per-graph results are a reshape away: graphs of different clusters
/// (training on several topologies) are padded to the largest with rows of zeros that no edge
/// touches, marked in `service_valid` and `node_valid`.
#[derive(Debug)]
pub struct HeteroGraph {
    /// Service features `[B·S, 7]`.
    pub x_service: Tensor,
    /// Machine features `[B·N, 3]`.
    pub x_node: Tensor,
    /// Per relation (in [`Relation::ALL`] order): edge index `[2, E]` and attributes `[E, F]`.
    pub edges: Vec<(Relation, Tensor, Tensor)>,
    /// Global scalars `[B, 2]`.
    pub global: Tensor,
    /// Each graph's snapshot time in seconds `[B]` (float64: a Unix time keeps its seconds), for
    /// encoders that read the age of older snapshots.
    pub time: Tensor,
    /// Graphs in the batch `B`.
    pub graphs: i64,
    /// Services per graph `S`.
    pub services: i64,
    /// Machines per graph `N`.
    pub nodes: i64,
    /// `[B, S]` float, 1 for a real service row and 0 for padding; `None` when nothing is padded.
    pub service_valid: Option<Tensor>,
    /// `[B, N]` float, 1 for a real machine row and 0 for padding; `None` when nothing is padded.
    pub node_valid: Option<Tensor>,
}

/// Why graphs cannot be batched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// No graph.
    #[error("a batch needs at least one graph")]
    Empty,
    /// Graphs of different clusters, one of them already a batch (only single graphs are padded).
    #[error("graph {index} (already a batch) has {services} services and {nodes} machines, the batch needs {services0} and {nodes0}: batches of different clusters cannot be joined (single graphs are padded)")]
    Mismatch {
        /// The graph that differs.
        index: usize,
        /// Its services.
        services: i64,
        /// Its machines.
        nodes: i64,
        /// The services the batch needs.
        services0: i64,
        /// The machines the batch needs.
        nodes0: i64,
    },
}

fn edges(set: &EdgeSet, dim: i64, device: Device) -> (Tensor, Tensor) {
    let e = set.len() as i64;
    let idx: Vec<i64> = set
        .src
        .iter()
        .chain(&set.dst)
        .map(|&v| i64::from(v))
        .collect();
    let attr: Vec<f32> = set
        .attr
        .iter()
        .flat_map(|a| (0..dim as usize).map(move |k| a.get(k).copied().unwrap_or(0.0)))
        .collect();
    (
        Tensor::from_slice(&idx).view([2, e]).to_device(device),
        Tensor::from_slice(&attr).view([e, dim]).to_device(device),
    )
}

impl HeteroGraph {
    /// The tensors of `s` on `device` (features as they are in the snapshot; scaling belongs to
    /// the encoder).
    pub fn from_snapshot(s: &Snapshot, device: Device) -> Self {
        let xs: Vec<f32> = s.service_x.iter().flatten().copied().collect();
        let xn: Vec<f32> = s.node_x.iter().flatten().copied().collect();
        let rel = |r: Relation, set: &EdgeSet| {
            let (i, a) = edges(set, r.edge_dim(), device);
            (r, i, a)
        };
        Self {
            x_service: Tensor::from_slice(&xs)
                .view([s.services.len() as i64, service_feature::COUNT as i64])
                .to_device(device),
            x_node: Tensor::from_slice(&xn)
                .view([s.nodes.len() as i64, node_feature::COUNT as i64])
                .to_device(device),
            edges: vec![
                rel(Relation::CALLS, &s.calls),
                rel(Relation::RUNS_ON, &s.runs_on),
                rel(Relation::HOSTS, &s.hosts),
            ],
            global: Tensor::from_slice(&s.global)
                .view([1, global_feature::COUNT as i64])
                .to_device(device),
            time: Tensor::from_slice(&[s.time_s]).to_device(device),
            graphs: 1,
            services: s.services.len() as i64,
            nodes: s.nodes.len() as i64,
            service_valid: None,
            node_valid: None,
        }
    }

    /// The disjoint union of `graphs` (each a single graph or a batch), in order. Graphs of one
    /// cluster are joined as they are; single graphs of different clusters are padded to the
    /// largest (see [`HeteroGraph::batch_padded`]).
    pub fn batch(graphs: &[&HeteroGraph]) -> Result<Self, BatchError> {
        Self::batch_padded(graphs, 0, 0)
    }

    /// [`HeteroGraph::batch`] with every graph padded to at least `services` services and
    /// `nodes` machines (a training on several topologies pads every batch to the largest, so
    /// that an action's index means the same in every batch). Padding rows are zeros, no edge
    /// touches them, and `service_valid`/`node_valid` mark them; a batch that needs none has
    /// neither.
    pub fn batch_padded(
        graphs: &[&HeteroGraph],
        services: i64,
        nodes: i64,
    ) -> Result<Self, BatchError> {
        graphs.first().ok_or(BatchError::Empty)?;
        let s_max = graphs
            .iter()
            .map(|g| g.services)
            .max()
            .unwrap_or(0)
            .max(services);
        let n_max = graphs.iter().map(|g| g.nodes).max().unwrap_or(0).max(nodes);
        let padded = graphs
            .iter()
            .any(|g| g.services != s_max || g.nodes != n_max || g.service_valid.is_some());
        if padded {
            // Only single graphs (or batches already padded to this size) are padded.
            for (index, g) in graphs.iter().enumerate() {
                if g.graphs != 1 && (g.services != s_max || g.nodes != n_max) {
                    return Err(BatchError::Mismatch {
                        index,
                        services: g.services,
                        nodes: g.nodes,
                        services0: s_max,
                        nodes0: n_max,
                    });
                }
            }
        }
        let pad_rows = |x: &Tensor, rows: i64, to: i64| {
            if rows == to {
                x.shallow_clone()
            } else {
                let w = x.size()[1];
                Tensor::cat(
                    &[
                        x.shallow_clone(),
                        x.new_zeros([to - rows, w], (x.kind(), x.device())),
                    ],
                    0,
                )
            }
        };
        let valid = |g: &HeteroGraph, own: &Option<Tensor>, rows: i64, to: i64| {
            own.as_ref().map_or_else(
                || {
                    let v = Tensor::ones([g.graphs, rows], (Kind::Float, g.x_service.device()));
                    if rows == to {
                        v
                    } else {
                        Tensor::cat(
                            &[
                                v.shallow_clone(),
                                v.new_zeros([g.graphs, to - rows], (Kind::Float, v.device())),
                            ],
                            1,
                        )
                    }
                },
                Tensor::shallow_clone,
            )
        };
        let cat = |f: &dyn Fn(&HeteroGraph) -> Tensor| {
            Tensor::cat(&graphs.iter().map(|g| f(g)).collect::<Vec<_>>(), 0)
        };
        let (mut s_off, mut n_off) = (0i64, 0i64);
        let mut per_rel: Vec<(Vec<Tensor>, Vec<Tensor>)> =
            (0..3).map(|_| (vec![], vec![])).collect();
        for g in graphs {
            for (k, (r, i, a)) in g.edges.iter().enumerate() {
                let off = |ty: &str| if ty == SERVICE { s_off } else { n_off };
                let shift = Tensor::from_slice(&[off(r.src), off(r.dst)])
                    .view([2, 1])
                    .to_device(i.device());
                per_rel[k].0.push(i + shift);
                per_rel[k].1.push(a.shallow_clone());
            }
            s_off += g.graphs * s_max;
            n_off += g.graphs * n_max;
        }
        let edges = Relation::ALL
            .iter()
            .zip(per_rel)
            .map(|(r, (i, a))| (*r, Tensor::cat(&i, 1), Tensor::cat(&a, 0)))
            .collect();
        Ok(Self {
            x_service: cat(&|g| pad_rows(&g.x_service, g.services, s_max)),
            x_node: cat(&|g| pad_rows(&g.x_node, g.nodes, n_max)),
            edges,
            global: cat(&|g| g.global.shallow_clone()),
            time: cat(&|g| g.time.shallow_clone()),
            graphs: graphs.iter().map(|g| g.graphs).sum(),
            services: s_max,
            nodes: n_max,
            service_valid: padded.then(|| cat(&|g| valid(g, &g.service_valid, g.services, s_max))),
            node_valid: padded.then(|| cat(&|g| valid(g, &g.node_valid, g.nodes, n_max))),
        })
    }

    /// Machine `k`'s type per graph `[B, N]` (int64): the CPU model id feature, clamped to
    /// `0..types`; a padding row's is `types` (one past the last, which no head reads).
    pub fn node_types(&self, types: i64) -> Tensor {
        let t = self
            .x_node
            .narrow(1, node_feature::CPU_MODEL_ID as i64, 1)
            .round()
            .clamp(0.0, (types - 1).max(0) as f64)
            .to_kind(Kind::Int64)
            .view([self.graphs, self.nodes]);
        match &self.node_valid {
            None => t,
            Some(v) => t.where_self(&v.gt(0.5), &t.full_like(types)),
        }
    }

    /// Node features of `ty`.
    pub fn x(&self, ty: &str) -> &Tensor {
        if ty == SERVICE {
            &self.x_service
        } else {
            &self.x_node
        }
    }
}

/// Drops `kind` checks in callers: every index tensor here is int64.
pub const INDEX: Kind = Kind::Int64;

#[cfg(test)]
mod tests {
    use super::*;
    use graphscaler_schemas::snapshot::EdgeSet;

    #[test]
    fn a_snapshot_becomes_tensors() {
        let s = Snapshot {
            schema_version: 2,
            time_s: 30.0,
            window_s: 30.0,
            services: vec!["a".into(), "b".into()],
            service_x: vec![[1.0; 7], [2.0; 7]],
            replicas_spec: vec![1, 2],
            replicas_ready: vec![1, 2],
            cpu_request_cores: vec![0.1, 0.2],
            nodes: vec!["n".into()],
            node_x: vec![[3.0, 4.0, 0.0]],
            calls: EdgeSet {
                src: vec![0],
                dst: vec![1],
                attr: vec![vec![5.0, 6.0, 0.1]],
            },
            runs_on: EdgeSet {
                src: vec![0, 1],
                dst: vec![0, 0],
                attr: vec![vec![1.0], vec![2.0]],
            },
            hosts: EdgeSet {
                src: vec![0, 0],
                dst: vec![0, 1],
                attr: vec![vec![1.0], vec![2.0]],
            },
            global: [0.5, 0.1],
            entry: Some([150.0, 0.0]),
            entry_rps: Some(100.0),
            cpu_limit_cores: vec![],
            service_missing: vec![],
            global_missing: false,
        };
        let g = HeteroGraph::from_snapshot(&s, Device::Cpu);
        assert_eq!(g.x_service.size(), [2, 7]);
        assert_eq!(g.x_node.size(), [1, 3]);
        let (r, i, a) = &g.edges[1];
        assert_eq!(*r, Relation::RUNS_ON);
        assert_eq!(i.size(), [2, 2]);
        assert_eq!(Vec::<i64>::try_from(i.view([-1])).unwrap(), [0, 1, 0, 0]);
        assert_eq!(Vec::<f32>::try_from(a.view([-1])).unwrap(), [1.0, 2.0]);
        assert_eq!(g.edges[0].2.size(), [1, 3]);
        assert_eq!(Relation::CALLS.key(), "<service___calls___service>");

        // Two copies batched: the second's edges point at its own rows.
        let b = HeteroGraph::batch(&[&g, &g]).unwrap();
        assert_eq!((b.graphs, b.services, b.nodes), (2, 2, 1));
        assert_eq!(b.x_service.size(), [4, 7]);
        assert_eq!(b.global.size(), [2, 2]);
        assert_eq!(Vec::<f64>::try_from(&b.time).unwrap(), [30.0, 30.0]);
        let (_, i, _) = &b.edges[1];
        assert_eq!(
            Vec::<i64>::try_from(i.view([-1])).unwrap(),
            [0, 1, 2, 3, 0, 0, 1, 1]
        );
        assert_eq!(
            Vec::<i64>::try_from(b.node_types(4).view([-1])).unwrap(),
            [0, 0]
        );
        let mut other = s.clone();
        other.nodes.push("m".into());
        other.node_x.push([1.0, 1.0, 1.0]);
        let g3 = HeteroGraph::from_snapshot(&other, Device::Cpu);
        // Another cluster: the smaller graph padded with a machine no edge touches.
        let p = HeteroGraph::batch(&[&g, &g3]).unwrap();
        assert_eq!((p.graphs, p.services, p.nodes), (2, 2, 2));
        assert_eq!(
            Vec::<f32>::try_from(p.node_valid.as_ref().unwrap().view([-1])).unwrap(),
            [1.0, 0.0, 1.0, 1.0]
        );
        assert_eq!(
            Vec::<i64>::try_from(p.node_types(4).view([-1])).unwrap(),
            [0, 4, 0, 1]
        );
        // A batch of several graphs is not padded again.
        let e = HeteroGraph::batch(&[&b, &g3]).unwrap_err().to_string();
        assert!(
            e.contains(
                "graph 0 (already a batch) has 2 services and 1 machines, the batch needs 2 and 2"
            ),
            "{e}"
        );
    }
}
