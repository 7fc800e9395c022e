//! Encoders: a snapshot's graph tensors in, an embedding per service and per machine and a pooled
//! graph embedding out. One trait, so that the policy heads and the algorithms do not care which.
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

use crate::graph::{HeteroGraph, Relation, NODE, SERVICE};
use crate::hetero::HeteroGat;

/// What an encoder gives.
#[derive(Debug)]
pub struct Embeddings {
    /// Per service `[S, D]`.
    pub service: Tensor,
    /// Per machine `[N, D]`.
    pub node: Tensor,
    /// The whole graph `[D]`.
    pub pooled: Tensor,
}

/// An encoder.
pub trait Encoder: std::fmt::Debug + Send {
    /// Embedding width `D`.
    fn dim(&self) -> i64;
    /// Encodes one (unscaled) graph.
    fn encode(&self, g: &HeteroGraph) -> Embeddings;
}

fn col(x: &Tensor, i: i64) -> Tensor {
    x.narrow(1, i, 1)
}

/// The scaled copy of `g` the encoders read.
pub fn scale(g: &HeteroGraph) -> HeteroGraph {
    let ln = |t: Tensor| t.clamp_min(0.0).log1p() / 7.0;
    let s = &g.x_service;
    let x_service = Tensor::cat(
        &[
            col(s, 0) / 100.0,
            col(s, 1) / 100.0,
            ln(col(s, 2)),
            col(s, 3),
            col(s, 4).clamp(0.0, 4.0),
            col(s, 5).clamp(0.0, 60.0) / 10.0,
            col(s, 6),
        ],
        1,
    );
    let n = &g.x_node;
    let x_node = Tensor::cat(&[col(n, 0) / 8.0, col(n, 1) / 32.0, col(n, 2)], 1);
    let edges = g
        .edges
        .iter()
        .map(|(r, i, a)| {
            let a = if *r == Relation::CALLS {
                Tensor::cat(&[ln(col(a, 0)), ln(col(a, 1)), col(a, 2)], 1)
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
            in_service: nn::linear(p / "in_service", 7, d, Default::default()),
            in_node: nn::linear(p / "in_node", 3, d, Default::default()),
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
        let mut h = std::collections::BTreeMap::from([
            (SERVICE, self.in_service.forward(&g.x_service).elu()),
            (NODE, self.in_node.forward(&g.x_node).elu()),
        ]);
        for layer in &self.layers {
            let out = layer.forward(&h, &g);
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
        pooled(&self.pool, service, node, self.dim)
    }
}

/// The embeddings with the pooled one: `pool` over the mean service and mean machine rows.
fn pooled(pool: &nn::Linear, service: Tensor, node: Tensor, d: i64) -> Embeddings {
    let pooled = pool
        .forward(&Tensor::cat(
            &[mean_rows(&service, d), mean_rows(&node, d)],
            0,
        ))
        .elu();
    Embeddings {
        service,
        node,
        pooled,
    }
}

/// The mean row (zeros for no rows).
fn mean_rows(x: &Tensor, d: i64) -> Tensor {
    if x.size()[0] == 0 {
        Tensor::zeros([d], (Kind::Float, x.device()))
    } else {
        x.mean_dim(0, false, Kind::Float)
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
        let ctx = 7 + 3 + 2;
        let mlp = |q: nn::Path, i: i64| {
            nn::seq()
                .add(nn::linear(&q / "0", i, dim, Default::default()))
                .add_fn(|x| x.elu())
                .add(nn::linear(&q / "2", dim, dim, Default::default()))
                .add_fn(|x| x.elu())
        };
        Self {
            dim,
            service: mlp(p / "service", 7 + ctx),
            node: mlp(p / "node", 3 + ctx),
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
        let ctx = Tensor::cat(
            &[
                mean_rows(&g.x_service, 7),
                mean_rows(&g.x_node, 3),
                g.global.to_kind(Kind::Float),
            ],
            0,
        );
        let with_ctx = |x: &Tensor| {
            let n = x.size()[0];
            Tensor::cat(
                &[x.shallow_clone(), ctx.unsqueeze(0).expand([n, -1], false)],
                1,
            )
        };
        let service = self.service.forward(&with_ctx(&g.x_service));
        let node = self.node.forward(&with_ctx(&g.x_node));
        pooled(&self.pool, service, node, self.dim)
    }
}
