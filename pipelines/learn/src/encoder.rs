//! Encoders: a batch of snapshots' graph tensors in, an embedding per service and per machine and a
//! pooled graph embedding per graph out. One trait, so that the policy heads and the algorithms do
//! not care which. The other encoders are in their own files: [`crate::gcn_encoder`] (HeteroGCN)
//! and [`crate::dysat`] (DySAT, over a window of snapshots).
//!
//! * [`GatEncoder`] — the main model: per node type an input projection, then `layers`
//!   heterogeneous GAT layers ([`HeteroGat`]: a GAT per relation with edge attributes, summed per
//!   destination type) with ELU and residual connections; pooled = a projection of the mean
//!   service and the mean machine embeddings. Defaults: 2 layers, 4 heads, 128 dimensions.
//! * [`MlpFlat`] — the ablation without topology: each service is embedded from its own features
//!   and a flat context (the mean of all service features, of all machine features, and the global
//!   scalars); no edge is ever read.
//!
//! Inputs are scaled first ([`scale`]): percentages to fractions, latencies and rates by
//! `ln(1 + x) / 7`, replica lag by 10 s, free CPU by 8 cores and free memory by 32 GiB, pod counts
//! by 10.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use graphscaler_schemas::snapshot::{
    call_feature as cf, global_feature, node_feature as nf, service_feature as sf,
};

use crate::graph::{HeteroGraph, Relation, NODE, SERVICE};

/// Widths of the feature rows (schemas' feature lists).
const SERVICE_W: i64 = sf::COUNT as i64;
const NODE_W: i64 = nf::COUNT as i64;
const GLOBAL_W: i64 = global_feature::COUNT as i64;
use crate::hetero::HeteroGat;

/// What an encoder gives, per graph of the batch.
#[derive(Debug)]
pub struct Embeddings {
    /// Per service `[B, S, D]`.
    pub service: Tensor,
    /// Per machine `[B, N, D]`.
    pub node: Tensor,
    /// The whole graph `[B, D]`.
    pub pooled: Tensor,
}

/// An encoder.
pub trait Encoder: std::fmt::Debug + Send {
    /// Embedding width `D`.
    fn dim(&self) -> i64;
    /// Encodes a batch of (unscaled) graphs.
    fn encode(&self, g: &HeteroGraph) -> Embeddings;
    /// Snapshots it reads, the newest last (1 but for a temporal encoder).
    fn window(&self) -> usize {
        1
    }
    /// Encodes a window of batches (`window[t]` holds every graph at step `t`, the newest last);
    /// a static encoder reads the newest only.
    fn encode_window(&self, window: &[&HeteroGraph]) -> Embeddings {
        self.encode(window[window.len() - 1])
    }
}

fn col(x: &Tensor, i: usize) -> Tensor {
    x.narrow(1, i as i64, 1)
}

/// The scaled copy of `g` the encoders read.
pub fn scale(g: &HeteroGraph) -> HeteroGraph {
    let ln = |t: Tensor| t.clamp_min(0.0).log1p() / 7.0;
    let s = &g.x_service;
    let x_service = Tensor::cat(
        &[
            col(s, sf::CPU_PCT) / 100.0,
            col(s, sf::MEM_PCT) / 100.0,
            ln(col(s, sf::P95_MS)),
            col(s, sf::STATEFUL),
            col(s, sf::RUE).clamp(0.0, 4.0),
            col(s, sf::REPLICA_LAG_S).clamp(0.0, 60.0) / 10.0,
            col(s, sf::HIT_RATIO),
        ],
        1,
    );
    let n = &g.x_node;
    let x_node = Tensor::cat(
        &[
            col(n, nf::FREE_CPU_CORES) / 8.0,
            col(n, nf::FREE_MEM_GIB) / 32.0,
            col(n, nf::CPU_MODEL_ID),
        ],
        1,
    );
    let edges = g
        .edges
        .iter()
        .map(|(r, i, a)| {
            let a = if *r == Relation::CALLS {
                Tensor::cat(
                    &[
                        ln(col(a, cf::RPS)),
                        ln(col(a, cf::P95_MS)),
                        col(a, cf::ERROR_RATE),
                    ],
                    1,
                )
            } else {
                a / 10.0
            };
            (*r, i.shallow_clone(), a)
        })
        .collect();
    HeteroGraph {
        x_service,
        x_node,
        edges,
        global: g.global.shallow_clone(),
        time: g.time.shallow_clone(),
        graphs: g.graphs,
        services: g.services,
        nodes: g.nodes,
        service_valid: g.service_valid.as_ref().map(Tensor::shallow_clone),
        node_valid: g.node_valid.as_ref().map(Tensor::shallow_clone),
    }
}

/// Settings of [`GatEncoder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatEncoderConfig {
    /// Embedding width (a multiple of `heads`).
    pub dim: i64,
    /// Attention heads per relation.
    pub heads: i64,
    /// Heterogeneous GAT layers.
    pub layers: usize,
}

impl Default for GatEncoderConfig {
    fn default() -> Self {
        Self {
            dim: 128,
            heads: 4,
            layers: 2,
        }
    }
}

/// The heterogeneous GAT encoder.
#[derive(Debug)]
pub struct GatEncoder {
    dim: i64,
    in_service: nn::Linear,
    in_node: nn::Linear,
    layers: Vec<HeteroGat>,
    pool: nn::Linear,
}

impl GatEncoder {
    /// An encoder under `p`.
    pub fn new(p: &nn::Path, cfg: GatEncoderConfig) -> Self {
        assert!(cfg.dim % cfg.heads == 0, "dim must be a multiple of heads");
        let d = cfg.dim;
        Self {
            dim: d,
            in_service: nn::linear(p / "in_service", SERVICE_W, d, Default::default()),
            in_node: nn::linear(p / "in_node", NODE_W, d, Default::default()),
            layers: (0..cfg.layers)
                .map(|l| HeteroGat::new(&(p / format!("layer{l}")), d, d, d / cfg.heads, cfg.heads))
                .collect(),
            pool: nn::linear(p / "pool", 2 * d, d, Default::default()),
        }
    }
}

impl Encoder for GatEncoder {
    fn dim(&self) -> i64 {
        self.dim
    }

    fn encode(&self, g: &HeteroGraph) -> Embeddings {
        let g = scale(g);
        let (service, node) = self.node_rows(&g);
        pooled(&self.pool, &g, service, node, self.dim)
    }
}

impl GatEncoder {
    /// The service and machine rows `[B·S, D]`, `[B·N, D]` of a scaled graph.
    pub(crate) fn node_rows(&self, g: &HeteroGraph) -> (Tensor, Tensor) {
        let mut h = std::collections::BTreeMap::from([
            (SERVICE, self.in_service.forward(&g.x_service).elu()),
            (NODE, self.in_node.forward(&g.x_node).elu()),
        ]);
        for layer in &self.layers {
            let out = layer.forward(&h, g);
            for (ty, y) in out {
                if let Some(prev) = h.get(ty) {
                    let next = y.elu() + prev;
                    h.insert(ty, next);
                }
            }
        }
        let service = h
            .remove(SERVICE)
            .unwrap_or_else(|| Tensor::zeros([0, self.dim], (Kind::Float, g.x_service.device())));
        let node = h
            .remove(NODE)
            .unwrap_or_else(|| Tensor::zeros([0, self.dim], (Kind::Float, g.x_node.device())));
        (service, node)
    }
}

/// The embeddings of rows `[B·S, D]` and `[B·N, D]` reshaped per graph, with the pooled one:
/// `pool` over each graph's mean service and mean machine rows (padding rows left out).
pub(crate) fn pooled(
    pool: &nn::Linear,
    g: &HeteroGraph,
    service: Tensor,
    node: Tensor,
    d: i64,
) -> Embeddings {
    let service = service.view([g.graphs, g.services, d]);
    let node = node.view([g.graphs, g.nodes, d]);
    let pooled = pool
        .forward(&Tensor::cat(
            &[
                mean_rows(&service, g.service_valid.as_ref()),
                mean_rows(&node, g.node_valid.as_ref()),
            ],
            1,
        ))
        .elu();
    Embeddings {
        service,
        node,
        pooled,
    }
}

/// The mean row per graph of `[B, R, D]` (zeros for no rows), over the rows `valid` `[B, R]`
/// marks (all of them without it).
pub(crate) fn mean_rows(x: &Tensor, valid: Option<&Tensor>) -> Tensor {
    let s = x.size();
    if s[1] == 0 {
        return Tensor::zeros([s[0], s[2]], (Kind::Float, x.device()));
    }
    match valid {
        None => x.mean_dim(1, false, Kind::Float),
        Some(v) => {
            let v = v.to_kind(Kind::Float).unsqueeze(-1);
            (x * &v).sum_dim_intlist(1, false, Kind::Float)
                / v.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
        }
    }
}

/// The no-topology ablation.
#[derive(Debug)]
pub struct MlpFlat {
    dim: i64,
    service: nn::Sequential,
    node: nn::Sequential,
    pool: nn::Linear,
}

impl MlpFlat {
    /// An encoder of width `dim` under `p`.
    pub fn new(p: &nn::Path, dim: i64) -> Self {
        let ctx = SERVICE_W + NODE_W + GLOBAL_W;
        let mlp = |q: nn::Path, i: i64| {
            nn::seq()
                .add(nn::linear(&q / "0", i, dim, Default::default()))
                .add_fn(|x| x.elu())
                .add(nn::linear(&q / "2", dim, dim, Default::default()))
                .add_fn(|x| x.elu())
        };
        Self {
            dim,
            service: mlp(p / "service", SERVICE_W + ctx),
            node: mlp(p / "node", NODE_W + ctx),
            pool: nn::linear(p / "pool", 2 * dim, dim, Default::default()),
        }
    }
}

impl Encoder for MlpFlat {
    fn dim(&self) -> i64 {
        self.dim
    }

    fn encode(&self, g: &HeteroGraph) -> Embeddings {
        let g = scale(g);
        let (b, s, n) = (g.graphs, g.services, g.nodes);
        let xs = g.x_service.view([b, s, SERVICE_W]);
        let xn = g.x_node.view([b, n, NODE_W]);
        let ctx = Tensor::cat(
            &[
                mean_rows(&xs, g.service_valid.as_ref()),
                mean_rows(&xn, g.node_valid.as_ref()),
                g.global.to_kind(Kind::Float),
            ],
            1,
        );
        let with_ctx = |x: &Tensor| {
            let r = x.size()[1];
            Tensor::cat(
                &[
                    x.shallow_clone(),
                    ctx.unsqueeze(1).expand([b, r, -1], false),
                ],
                2,
            )
            .view([b * r, -1])
        };
        let service = self.service.forward(&with_ctx(&xs));
        let node = self.node.forward(&with_ctx(&xn));
        pooled(&self.pool, &g, service, node, self.dim)
    }
}
