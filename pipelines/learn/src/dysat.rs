//! DySAT (Sankar et al., WSDM 2020) on the heterogeneous graph: structural attention on each
//! snapshot, then temporal self-attention across the last `T` snapshots, per node.
//!
//! * **Structural**: the heterogeneous GAT ([`GatEncoder`]'s input projections and layers, one
//!   set of weights shared by every step) embeds each snapshot of the window.
//! * **Temporal**: per node type, each node's sequence of `T` structural embeddings plus learned
//!   position embeddings goes through multi-head scaled dot-product attention; the newest step
//!   is the query and attends to every step up to it (DySAT's causal mask, read at its last
//!   position), followed by a position-wise feed-forward layer, both with residual connections.
//! * The newest step's outputs are the service and machine embeddings; pooled = a projection of
//!   their means.
//!
//! Defaults: `T` = 4, 1 structural layer, 4 heads, 128 dimensions. A window shorter than `T`
//! (the start of an episode) uses the last positions' embeddings.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::encoder::{pooled, scale, Embeddings, Encoder, GatEncoder, GatEncoderConfig};
use crate::graph::HeteroGraph;

/// Settings of [`Dysat`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DysatConfig {
    /// Embedding width (a multiple of `heads`).
    pub dim: i64,
    /// Attention heads (structural and temporal).
    pub heads: i64,
    /// Structural GAT layers.
    pub layers: usize,
    /// Snapshots in the window, `T`.
    pub window: usize,
}

impl Default for DysatConfig {
    fn default() -> Self {
        Self {
            dim: 128,
            heads: 4,
            layers: 1,
            window: 4,
        }
    }
}

/// Temporal self-attention for one node type.
#[derive(Debug)]
struct Temporal {
    heads: i64,
    position: Tensor,
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    o: nn::Linear,
    ff: nn::Sequential,
}

impl Temporal {
    fn new(p: &nn::Path, d: i64, heads: i64, t: i64) -> Self {
        let lin = |n: &str| nn::linear(p / n, d, d, Default::default());
        Self {
            heads,
            position: p.var(
                "position",
                &[t, d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.1,
                },
            ),
            q: lin("q"),
            k: lin("k"),
            v: lin("v"),
            o: lin("o"),
            ff: nn::seq()
                .add(nn::linear(p / "ff" / "0", d, d, Default::default()))
                .add_fn(|x| x.elu())
                .add(nn::linear(p / "ff" / "2", d, d, Default::default())),
        }
    }

    /// `seq` `[R, T', D]` (oldest first) → the newest step's output `[R, D]`.
    fn forward(&self, seq: &Tensor) -> Tensor {
        let s = seq.size();
        let (r, t, d) = (s[0], s[1], s[2]);
        let total = self.position.size()[0];
        let x = seq + self.position.narrow(0, total - t, t).unsqueeze(0);
        let h = self.heads;
        let c = d / h;
        let last = x.select(1, t - 1);
        let q = self.q.forward(&last).view([r, h, 1, c]);
        let k = self.k.forward(&x).view([r, t, h, c]).transpose(1, 2);
        let v = self.v.forward(&x).view([r, t, h, c]).transpose(1, 2);
        let att = (q.matmul(&k.transpose(2, 3)) / (c as f64).sqrt()).softmax(-1, Kind::Float);
        let y = att.matmul(&v).view([r, d]);
        let y = self.o.forward(&y) + seq.select(1, t - 1);
        self.ff.forward(&y) + y
    }
}

/// The DySAT encoder.
#[derive(Debug)]
pub struct Dysat {
    dim: i64,
    window: usize,
    structural: GatEncoder,
    temporal_service: Temporal,
    temporal_node: Temporal,
    pool: nn::Linear,
}

impl Dysat {
    /// An encoder under `p`.
    pub fn new(p: &nn::Path, cfg: DysatConfig) -> Self {
        let t = cfg.window.max(1) as i64;
        Self {
            dim: cfg.dim,
            window: cfg.window.max(1),
            structural: GatEncoder::new(
                &(p / "structural"),
                GatEncoderConfig {
                    dim: cfg.dim,
                    heads: cfg.heads,
                    layers: cfg.layers,
                },
            ),
            temporal_service: Temporal::new(&(p / "temporal_service"), cfg.dim, cfg.heads, t),
            temporal_node: Temporal::new(&(p / "temporal_node"), cfg.dim, cfg.heads, t),
            pool: nn::linear(p / "pool", 2 * cfg.dim, cfg.dim, Default::default()),
        }
    }
}

impl Encoder for Dysat {
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
        let steps = &window[window.len().saturating_sub(self.window)..];
        let (mut services, mut nodes) = (vec![], vec![]);
        for g in steps {
            let (s, n) = self.structural.node_rows(&scale(g));
            services.push(s);
            nodes.push(n);
        }
        let service = self.temporal_service.forward(&Tensor::stack(&services, 1));
        let node = self.temporal_node.forward(&Tensor::stack(&nodes, 1));
        let newest = steps[steps.len() - 1];
        pooled(&self.pool, newest, service, node, self.dim)
    }
}
