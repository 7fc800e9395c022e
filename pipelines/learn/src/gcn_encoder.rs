//! HeteroGCN: the heterogeneous graph convolutional encoder, the topology-aware baseline without
//! attention (GCN-SAC).
//!
//! Per node type an input projection, then `layers` heterogeneous layers, each the sum per
//! destination type of one convolution per relation, as PyG's `HeteroConv(aggr="sum")`:
//!
//! * `(service, calls, service)` — [`GcnConv`] (PyG's `GCNConv`: self-loops, symmetric
//!   normalisation);
//! * `(service, runs_on, node)` and `(node, hosts, service)` — a bipartite graph convolution
//!   (`GCNConv` has no bipartite form): `y_d = W · Σ_{s→d} x_s / √(deg(s)·deg(d)) + b`, the
//!   symmetric normalisation over the two sides' degrees.
//!
//! ELU and a residual connection after each layer; pooled = a projection of the mean service and
//! mean machine embeddings. Defaults: 2 layers, 128 dimensions.

use std::collections::BTreeMap;

use graphscaler_schemas::snapshot::{node_feature, service_feature};
use tch::nn::{self, Init, Module};
use tch::{Kind, Tensor};

use crate::encoder::{pooled, scale, Embeddings, Encoder};
use crate::gcn::GcnConv;
use crate::graph::{HeteroGraph, Relation};
use crate::scatter;

/// Settings of [`GcnEncoder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcnEncoderConfig {
    /// Embedding width.
    pub dim: i64,
    /// Heterogeneous GCN layers.
    pub layers: usize,
}

impl Default for GcnEncoderConfig {
    fn default() -> Self {
        Self {
            dim: 128,
            layers: 2,
        }
    }
}

/// A bipartite convolution with symmetric degree normalisation.
#[derive(Debug)]
struct BipartiteGcn {
    weight: Tensor,
    bias: Tensor,
}

impl BipartiteGcn {
    fn new(p: &nn::Path, i: i64, o: i64) -> Self {
        let a = (6.0 / (i + o) as f64).sqrt();
        Self {
            weight: (p / "lin").var("weight", &[o, i], Init::Uniform { lo: -a, up: a }),
            bias: p.var("bias", &[o], Init::Const(0.0)),
        }
    }

    fn forward(&self, x_src: &Tensor, n_dst: i64, edge_index: &Tensor) -> Tensor {
        let (src, dst) = (edge_index.get(0), edge_index.get(1));
        let ones = Tensor::ones([src.size()[0]], (Kind::Float, x_src.device()));
        let deg_s = scatter::sum(&ones, &src, x_src.size()[0]).clamp_min(1.0);
        let deg_d = scatter::sum(&ones, &dst, n_dst).clamp_min(1.0);
        let norm = (deg_s.index_select(0, &src) * deg_d.index_select(0, &dst)).rsqrt();
        let h = x_src.matmul(&self.weight.tr());
        scatter::sum(&(norm.unsqueeze(-1) * h.index_select(0, &src)), &dst, n_dst) + &self.bias
    }
}

#[derive(Debug)]
struct Layer {
    calls: GcnConv,
    runs_on: BipartiteGcn,
    hosts: BipartiteGcn,
}

/// The heterogeneous GCN encoder.
#[derive(Debug)]
pub struct GcnEncoder {
    dim: i64,
    in_service: nn::Linear,
    in_node: nn::Linear,
    layers: Vec<Layer>,
    pool: nn::Linear,
}

impl GcnEncoder {
    /// An encoder under `p`.
    pub fn new(p: &nn::Path, cfg: GcnEncoderConfig) -> Self {
        let d = cfg.dim;
        let layers = (0..cfg.layers)
            .map(|l| {
                let q = p / format!("layer{l}") / "convs";
                Layer {
                    calls: GcnConv::new(&(&q / Relation::CALLS.key()), d, d),
                    runs_on: BipartiteGcn::new(&(&q / Relation::RUNS_ON.key()), d, d),
                    hosts: BipartiteGcn::new(&(&q / Relation::HOSTS.key()), d, d),
                }
            })
            .collect();
        Self {
            dim: d,
            in_service: nn::linear(
                p / "in_service",
                service_feature::COUNT as i64,
                d,
                Default::default(),
            ),
            in_node: nn::linear(
                p / "in_node",
                node_feature::COUNT as i64,
                d,
                Default::default(),
            ),
            layers,
            pool: nn::linear(p / "pool", 2 * d, d, Default::default()),
        }
    }
}

impl Encoder for GcnEncoder {
    fn dim(&self) -> i64 {
        self.dim
    }

    fn encode(&self, g: &HeteroGraph) -> Embeddings {
        let g = scale(g);
        let edges: BTreeMap<&str, &Tensor> = g.edges.iter().map(|(r, i, _)| (r.name, i)).collect();
        let mut hs = self.in_service.forward(&g.x_service).elu();
        let mut hn = self.in_node.forward(&g.x_node).elu();
        for l in &self.layers {
            let (ns, nn_) = (hs.size()[0], hn.size()[0]);
            let ys = l.calls.forward(&hs, edges[Relation::CALLS.name])
                + l.hosts.forward(&hn, ns, edges[Relation::HOSTS.name]);
            let yn = l.runs_on.forward(&hs, nn_, edges[Relation::RUNS_ON.name]);
            hs = ys.elu() + hs;
            hn = yn.elu() + hn;
        }
        pooled(&self.pool, &g, hs, hn, self.dim)
    }
}
