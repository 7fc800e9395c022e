//! TGAT (Xu et al., "Inductive representation learning on temporal graphs", ICLR 2020) on the
//! windowed snapshots: attention over a node's temporal neighbourhood, each neighbour keyed by a
//! functional encoding of its age.
//!
//! * **Time encoding** (TGAT's Bochner encoding): `Φ(Δt) = cos(ω Δt + φ)` with learned
//!   frequencies `ω` (initialised as TGAT's code does, `1 / 10^linspace(0, 9, d_t)`) and phases
//!   `φ` (zeros); `Δt` is the age in seconds, from the snapshots' own times.
//! * **Temporal neighbourhood.** The window's `T` snapshots become one graph of node copies,
//!   node `i` at step `k`. Its neighbours are, for every step `k' ≤ k` and every relation
//!   (`calls`, `runs_on`, `hosts`), the sources of its incoming edges in snapshot `k'`, with
//!   that snapshot's edge attributes and the age `t_k − t_k'`; and its own copies at steps
//!   `k' ≤ k` (a `history` relation per node type, no edge attributes), so that a service's own
//!   past load is read by age as well. Nothing reads a later snapshot.
//! * **A layer** (TGAT's attention and merge): per relation, multi-head attention with query
//!   `W_q [h_i(t_k) ‖ Φ(0)]` and keys and values `W_{k,v} [h_j(t_k') ‖ e_ji ‖ Φ(t_k − t_k')]`,
//!   the heads concatenated and projected; the relations summed per destination type (as
//!   `HeteroConv`); then TGAT's merge, `h' = W_2 relu(W_1 [agg ‖ h])`.
//! * Inputs: per node type a projection of the scaled features (as [`GatEncoder`]); outputs: the
//!   newest step's node rows after `layers` layers; pooled = a projection of their means.
//!
//! Defaults: `T` = 4, 2 layers, 4 heads, 128 dimensions, a 32-wide time encoding. A window
//! shorter than `T` (the start of an episode) uses the snapshots there are.
//!
//! [`GatEncoder`]: crate::encoder::GatEncoder

use std::collections::BTreeMap;

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::encoder::{pooled, scale, Embeddings, Encoder};
use crate::graph::{HeteroGraph, Relation, NODE, SERVICE};
use graphscaler_schemas::snapshot::{node_feature as nf, service_feature as sf};

/// Settings of [`Tgat`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TgatConfig {
    /// Embedding width (a multiple of `heads`).
    pub dim: i64,
    /// Attention heads.
    pub heads: i64,
    /// Temporal attention layers.
    pub layers: usize,
    /// Snapshots in the window, `T`.
    pub window: usize,
    /// Width of the time encoding.
    pub time_dim: i64,
}

impl Default for TgatConfig {
    fn default() -> Self {
        Self {
            dim: 128,
            heads: 4,
            layers: 2,
            window: 4,
            time_dim: 32,
        }
    }
}

/// `Φ(Δt) = cos(ω Δt + φ)`.
#[derive(Debug)]
struct TimeEncode {
    freq: Tensor,
    phase: Tensor,
}

impl TimeEncode {
    fn new(p: &nn::Path, d: i64) -> Self {
        let d = d.max(1);
        let freq: Vec<f32> = (0..d)
            .map(|i| {
                let e = if d == 1 {
                    0.0
                } else {
                    9.0 * i as f64 / (d - 1) as f64
                };
                (1.0 / 10f64.powf(e)) as f32
            })
            .collect();
        let freq = p.var_copy("freq", &Tensor::from_slice(&freq));
        let phase = p.var("phase", &[d], nn::Init::Const(0.0));
        Self { freq, phase }
    }

    /// Ages `[E]` (seconds) → `[E, d]`.
    fn forward(&self, age: &Tensor) -> Tensor {
        (age.unsqueeze(1) * &self.freq + &self.phase).cos()
    }
}

/// Which neighbours: a relation's edges, or a node type's own earlier copies.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Neighbours {
    Edges(Relation),
    History(&'static str),
}

impl Neighbours {
    const ALL: [Neighbours; 5] = [
        Neighbours::Edges(Relation::CALLS),
        Neighbours::Edges(Relation::RUNS_ON),
        Neighbours::Edges(Relation::HOSTS),
        Neighbours::History(SERVICE),
        Neighbours::History(NODE),
    ];

    fn src(&self) -> &'static str {
        match self {
            Self::Edges(r) => r.src,
            Self::History(t) => t,
        }
    }

    fn dst(&self) -> &'static str {
        match self {
            Self::Edges(r) => r.dst,
            Self::History(t) => t,
        }
    }

    fn edge_dim(&self) -> i64 {
        match self {
            Self::Edges(r) => r.edge_dim(),
            Self::History(_) => 0,
        }
    }

    fn key(&self) -> String {
        match self {
            Self::Edges(r) => r.name.to_string(),
            Self::History(t) => format!("{t}_history"),
        }
    }
}

/// One relation's temporal edges over the window's node copies.
#[derive(Debug)]
struct TemporalEdges {
    src: Tensor,
    dst: Tensor,
    attr: Tensor,
    age: Tensor,
}

/// Rows of `ty` per step (`B·S` or `B·N`) and per graph (`S` or `N`).
fn rows(g: &HeteroGraph, ty: &str) -> (i64, i64) {
    let per = if ty == SERVICE { g.services } else { g.nodes };
    (g.graphs * per, per)
}

/// The temporal edges of `which` over `steps` (oldest first, all of one batch shape).
fn temporal_edges(steps: &[HeteroGraph], which: Neighbours) -> TemporalEdges {
    let g0 = &steps[0];
    let device = g0.x_service.device();
    let (src_rows, _) = rows(g0, which.src());
    let (dst_rows, dst_per) = rows(g0, which.dst());
    let (mut src, mut dst, mut attr, mut age) = (vec![], vec![], vec![], vec![]);
    for (k, newer) in steps.iter().enumerate() {
        for (kp, older) in steps.iter().enumerate().take(k + 1) {
            let (s, d, a) = match which {
                Neighbours::Edges(r) => {
                    let (_, i, a) = older
                        .edges
                        .iter()
                        .find(|(e, _, _)| *e == r)
                        .expect("every graph carries the three relations");
                    (i.get(0), i.get(1), a.shallow_clone())
                }
                Neighbours::History(_) => {
                    let i = Tensor::arange(dst_rows, (Kind::Int64, device));
                    let a = Tensor::zeros([dst_rows, 0], (Kind::Float, device));
                    (i.shallow_clone(), i, a)
                }
            };
            let graph = d.floor_divide_scalar(dst_per.max(1));
            let gap = (&newer.time - &older.time)
                .clamp_min(0.0)
                .to_kind(Kind::Float);
            age.push(gap.index_select(0, &graph));
            src.push(s + kp as i64 * src_rows);
            dst.push(d + k as i64 * dst_rows);
            attr.push(a);
        }
    }
    TemporalEdges {
        src: Tensor::cat(&src, 0),
        dst: Tensor::cat(&dst, 0),
        attr: Tensor::cat(&attr, 0),
        age: Tensor::cat(&age, 0),
    }
}

/// TGAT's multi-head attention for one relation.
#[derive(Debug)]
struct Attention {
    heads: i64,
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    o: nn::Linear,
}

impl Attention {
    fn new(p: &nn::Path, d: i64, edge_dim: i64, time_dim: i64, heads: i64) -> Self {
        let kv = d + edge_dim + time_dim;
        Self {
            heads,
            q: nn::linear(p / "q", d + time_dim, d, Default::default()),
            k: nn::linear(p / "k", kv, d, Default::default()),
            v: nn::linear(p / "v", kv, d, Default::default()),
            o: nn::linear(p / "o", d, d, Default::default()),
        }
    }

    /// Destination rows `[Nd, D]` from sources `h_src` over `e`.
    fn forward(
        &self,
        h_src: &Tensor,
        h_dst: &Tensor,
        e: &TemporalEdges,
        time: &TimeEncode,
    ) -> Tensor {
        let s = h_dst.size();
        let (nd, d) = (s[0], s[1]);
        let (h, c) = (self.heads, d / self.heads);
        let zero = time.forward(&Tensor::zeros([1], (Kind::Float, h_dst.device())));
        let q_in = Tensor::cat(&[h_dst.shallow_clone(), zero.expand([nd, -1], false)], 1);
        let q = self.q.forward(&q_in).view([nd, h, c]);
        let kv_in = Tensor::cat(
            &[
                h_src.index_select(0, &e.src),
                e.attr.shallow_clone(),
                time.forward(&e.age),
            ],
            1,
        );
        let k = self.k.forward(&kv_in).view([-1, h, c]);
        let v = self.v.forward(&kv_in).view([-1, h, c]);
        let score = (q.index_select(0, &e.dst) * k).sum_dim_intlist(-1, false, Kind::Float)
            / (c as f64).sqrt();
        let alpha = crate::scatter::softmax(&score, &e.dst, nd);
        let out = crate::scatter::sum(&(alpha.unsqueeze(-1) * v), &e.dst, nd).view([nd, d]);
        self.o.forward(&out)
    }
}

/// TGAT's merge: `W_2 relu(W_1 [agg ‖ h])`.
#[derive(Debug)]
struct Merge {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Merge {
    fn new(p: &nn::Path, d: i64) -> Self {
        Self {
            fc1: nn::linear(p / "fc1", 2 * d, d, Default::default()),
            fc2: nn::linear(p / "fc2", d, d, Default::default()),
        }
    }

    fn forward(&self, agg: &Tensor, h: &Tensor) -> Tensor {
        self.fc2
            .forward(&self.fc1.forward(&Tensor::cat(&[agg, h], 1)).relu())
    }
}

/// One layer: attention per relation, summed per destination type, then the merge.
#[derive(Debug)]
struct Layer {
    attention: Vec<(Neighbours, Attention)>,
    merge: BTreeMap<&'static str, Merge>,
}

impl Layer {
    fn new(p: &nn::Path, cfg: &TgatConfig) -> Self {
        Self {
            attention: Neighbours::ALL
                .iter()
                .map(|n| {
                    let a = Attention::new(
                        &(p / n.key()),
                        cfg.dim,
                        n.edge_dim(),
                        cfg.time_dim,
                        cfg.heads,
                    );
                    (*n, a)
                })
                .collect(),
            merge: [SERVICE, NODE]
                .into_iter()
                .map(|t| (t, Merge::new(&(p / format!("merge_{t}")), cfg.dim)))
                .collect(),
        }
    }

    fn forward(
        &self,
        h: &BTreeMap<&'static str, Tensor>,
        edges: &[TemporalEdges],
        time: &TimeEncode,
    ) -> BTreeMap<&'static str, Tensor> {
        let mut agg: BTreeMap<&'static str, Tensor> = BTreeMap::new();
        for ((n, att), e) in self.attention.iter().zip(edges) {
            let y = att.forward(&h[n.src()], &h[n.dst()], e, time);
            let sum = match agg.remove(n.dst()) {
                Some(prev) => prev + y,
                None => y,
            };
            agg.insert(n.dst(), sum);
        }
        self.merge
            .iter()
            .map(|(t, m)| (*t, m.forward(&agg[t], &h[t])))
            .collect()
    }
}

/// The TGAT encoder.
#[derive(Debug)]
pub struct Tgat {
    dim: i64,
    window: usize,
    time: TimeEncode,
    in_service: nn::Linear,
    in_node: nn::Linear,
    layers: Vec<Layer>,
    pool: nn::Linear,
}

impl Tgat {
    /// An encoder under `p`.
    pub fn new(p: &nn::Path, cfg: TgatConfig) -> Self {
        assert!(cfg.dim % cfg.heads == 0, "dim must be a multiple of heads");
        let d = cfg.dim;
        Self {
            dim: d,
            window: cfg.window.max(1),
            time: TimeEncode::new(&(p / "time"), cfg.time_dim),
            in_service: nn::linear(p / "in_service", sf::COUNT as i64, d, Default::default()),
            in_node: nn::linear(p / "in_node", nf::COUNT as i64, d, Default::default()),
            layers: (0..cfg.layers)
                .map(|l| Layer::new(&(p / format!("layer{l}")), &cfg))
                .collect(),
            pool: nn::linear(p / "pool", 2 * d, d, Default::default()),
        }
    }
}

impl Encoder for Tgat {
    fn dim(&self) -> i64 {
        self.dim
    }

    fn window(&self) -> usize {
        self.window
    }

    fn encode(&self, g: &HeteroGraph) -> Embeddings {
        self.encode_window(&[g])
    }

    fn encode_window(&self, window: &[&HeteroGraph]) -> Embeddings {
        let steps: Vec<HeteroGraph> = window[window.len().saturating_sub(self.window)..]
            .iter()
            .map(|g| scale(g))
            .collect();
        let edges: Vec<TemporalEdges> = Neighbours::ALL
            .iter()
            .map(|n| temporal_edges(&steps, *n))
            .collect();
        let cat = |f: &dyn Fn(&HeteroGraph) -> &Tensor| {
            Tensor::cat(&steps.iter().map(f).collect::<Vec<_>>(), 0)
        };
        let mut h = BTreeMap::from([
            (
                SERVICE,
                self.in_service.forward(&cat(&|g| &g.x_service)).elu(),
            ),
            (NODE, self.in_node.forward(&cat(&|g| &g.x_node)).elu()),
        ]);
        for layer in &self.layers {
            h = layer.forward(&h, &edges, &self.time);
        }
        let newest = &steps[steps.len() - 1];
        let last = |ty: &'static str, h: &mut BTreeMap<&'static str, Tensor>| {
            let (r, _) = rows(newest, ty);
            let x = h.remove(ty).expect("both node types are kept");
            x.narrow(0, (steps.len() as i64 - 1) * r, r)
        };
        let service = last(SERVICE, &mut h);
        let node = last(NODE, &mut h);
        pooled(&self.pool, newest, service, node, self.dim)
    }
}
