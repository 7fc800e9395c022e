//! A graph convolution with PyG 2.8.1 `GCNConv`'s semantics and parameter names (`lin.weight`,
//! `bias`): self-loops added where missing, symmetric normalisation
//! `D^{-1/2} (A + I) D^{-1/2}` by in-degree, then a bias.

use tch::nn::{self, Init};
use tch::Tensor;

use crate::scatter;

/// The layer (one node type; PyG's `GCNConv` has no bipartite form).
#[derive(Debug)]
pub struct GcnConv {
    weight: Tensor,
    bias: Tensor,
}

impl GcnConv {
    /// A layer from `in_dim` to `out` channels under `p` (Glorot weight, zero bias).
    pub fn new(p: &nn::Path, in_dim: i64, out: i64) -> Self {
        let a = (6.0 / (in_dim + out) as f64).sqrt();
        Self {
            weight: (p / "lin").var("weight", &[out, in_dim], Init::Uniform { lo: -a, up: a }),
            bias: p.var("bias", &[out], Init::Const(0.0)),
        }
    }

    /// Runs it: `x` `[N, in]`, `edge_index` `[2, E]`; returns `[N, out]`.
    pub fn forward(&self, x: &Tensor, edge_index: &Tensor) -> Tensor {
        let n = x.size()[0];
        let src = edge_index.get(0);
        let dst = edge_index.get(1);
        // add_remaining_self_loops: every node gets exactly one self-loop of weight 1.
        let keep = src.ne_tensor(&dst);
        let loops = scatter::arange(n, x.device());
        let src = Tensor::cat(&[src.masked_select(&keep), loops.shallow_clone()], 0);
        let dst = Tensor::cat(&[dst.masked_select(&keep), loops], 0);
        let ones = Tensor::ones([src.size()[0]], (x.kind(), x.device()));
        let deg = scatter::sum(&ones, &dst, n);
        let dis = deg.pow_tensor_scalar(-0.5);
        let dis = dis.masked_fill(&dis.isinf(), 0.0);
        let norm = dis.index_select(0, &src) * dis.index_select(0, &dst);
        let h = x.matmul(&self.weight.tr());
        let msg = norm.unsqueeze(-1) * h.index_select(0, &src);
        scatter::sum(&msg, &dst, n) + &self.bias
    }
}
