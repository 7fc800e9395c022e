//! A graph attention layer with PyG 2.8.1 `GATConv`'s semantics and parameter names.
//!
//! For a relation from `src` to `dst` nodes, with `H` heads of `C` channels:
//!
//! ```text
//! x_s = lin_src(x_src)  x_d = lin_dst(x_dst)        (one shared `lin` when both ends are one type)
//! α_ij = softmax_j( leaky_relu( a_src·x_s[j] + a_dst·x_d[i] + a_edge·lin_edge(e_ji), 0.2 ) )
//! out_i = Σ_j α_ij x_s[j]   (heads concatenated, or averaged)  + bias
//! ```
//!
//! With `add_self_loops` (one node type only), existing self-loops are removed and every node
//! gets one, whose edge attributes are the mean of its incoming edges' (PyG's
//! `fill_value="mean"`). Parameters: `lin.weight` (or `lin_src.weight` and `lin_dst.weight`),
//! `att_src`, `att_dst` (`[1, H, C]`), `lin_edge.weight`, `att_edge`, `bias`.

use tch::nn::{self, Init};
use tch::Tensor;

use crate::scatter;

/// Settings of one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatConfig {
    /// Input width of source nodes.
    pub in_src: i64,
    /// Input width of destination nodes; `None`: same node type as the source (one `lin`).
    pub in_dst: Option<i64>,
    /// Channels per head.
    pub out: i64,
    /// Heads.
    pub heads: i64,
    /// Concatenate heads (else average them).
    pub concat: bool,
    /// Edge attribute width, if edges carry attributes.
    pub edge_dim: Option<i64>,
    /// Add self-loops (only meaningful when both ends are one node type).
    pub add_self_loops: bool,
    /// Slope of the leaky ReLU on attention logits.
    pub negative_slope: f64,
}

impl GatConfig {
    /// PyG's defaults for a same-type relation: concatenated heads, self-loops.
    pub fn same_type(in_dim: i64, out: i64, heads: i64, edge_dim: Option<i64>) -> Self {
        Self {
            in_src: in_dim,
            in_dst: None,
            out,
            heads,
            concat: true,
            edge_dim,
            add_self_loops: true,
            negative_slope: 0.2,
        }
    }

    /// A bipartite relation: separate projections, no self-loops.
    pub fn bipartite(
        in_src: i64,
        in_dst: i64,
        out: i64,
        heads: i64,
        edge_dim: Option<i64>,
    ) -> Self {
        Self {
            in_src,
            in_dst: Some(in_dst),
            out,
            heads,
            concat: true,
            edge_dim,
            add_self_loops: false,
            negative_slope: 0.2,
        }
    }

    /// Output width.
    pub fn out_dim(&self) -> i64 {
        if self.concat {
            self.out * self.heads
        } else {
            self.out
        }
    }
}

/// The layer.
#[derive(Debug)]
pub struct GatConv {
    cfg: GatConfig,
    lin_src: Tensor,
    lin_dst: Option<Tensor>,
    att_src: Tensor,
    att_dst: Tensor,
    lin_edge: Option<Tensor>,
    att_edge: Option<Tensor>,
    bias: Tensor,
}

impl GatConv {
    /// A layer with its parameters under `p`, initialised as PyG does (Glorot weights and
    /// attention vectors, zero bias).
    pub fn new(p: &nn::Path, cfg: GatConfig) -> Self {
        let hc = cfg.heads * cfg.out;
        let glorot = |fan_in: i64, fan_out: i64| {
            let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
            Init::Uniform { lo: -a, up: a }
        };
        let (lin_src, lin_dst) = match cfg.in_dst {
            None => (
                (p / "lin").var("weight", &[hc, cfg.in_src], glorot(cfg.in_src, hc)),
                None,
            ),
            Some(d) => (
                (p / "lin_src").var("weight", &[hc, cfg.in_src], glorot(cfg.in_src, hc)),
                Some((p / "lin_dst").var("weight", &[hc, d], glorot(d, hc))),
            ),
        };
        let att = |name: &str| p.var(name, &[1, cfg.heads, cfg.out], glorot(cfg.heads, cfg.out));
        let (lin_edge, att_edge) = match cfg.edge_dim {
            Some(e) => (
                Some((p / "lin_edge").var("weight", &[hc, e], glorot(e, hc))),
                Some(att("att_edge")),
            ),
            None => (None, None),
        };
        Self {
            att_src: att("att_src"),
            att_dst: att("att_dst"),
            bias: p.var("bias", &[cfg.out_dim()], Init::Const(0.0)),
            cfg,
            lin_src,
            lin_dst,
            lin_edge,
            att_edge,
        }
    }

    /// The settings.
    pub fn config(&self) -> &GatConfig {
        &self.cfg
    }

    /// Runs the layer: `x_src` `[Ns, in_src]`, `x_dst` `[Nd, in_dst]` (the same tensor for a
    /// same-type relation), `edge_index` `[2, E]`, `edge_attr` `[E, edge_dim]`. Returns
    /// `[Nd, out_dim]`.
    pub fn forward(
        &self,
        x_src: &Tensor,
        x_dst: &Tensor,
        edge_index: &Tensor,
        edge_attr: Option<&Tensor>,
    ) -> Tensor {
        let (h, c) = (self.cfg.heads, self.cfg.out);
        let xs = x_src.matmul(&self.lin_src.tr()).view([-1, h, c]);
        let xd = match &self.lin_dst {
            Some(w) => x_dst.matmul(&w.tr()).view([-1, h, c]),
            None => x_dst.matmul(&self.lin_src.tr()).view([-1, h, c]),
        };
        let n_dst = xd.size()[0];
        let mut src = edge_index.get(0);
        let mut dst = edge_index.get(1);
        let mut attr = edge_attr.map(|a| a.shallow_clone());
        if self.cfg.add_self_loops {
            let n = xs.size()[0].min(n_dst);
            let keep = src.ne_tensor(&dst);
            src = src.masked_select(&keep);
            dst = dst.masked_select(&keep);
            let loops = scatter::arange(n, xs.device());
            if let Some(a) = attr.take() {
                let a = a.index_select(0, &keep.nonzero().view([-1]));
                let fill = scatter::mean(&a, &dst, n);
                attr = Some(Tensor::cat(&[a, fill], 0));
            }
            src = Tensor::cat(&[src, loops.shallow_clone()], 0);
            dst = Tensor::cat(&[dst, loops], 0);
        }
        let a_src = (&xs * &self.att_src).sum_dim_intlist(-1, false, xs.kind());
        let a_dst = (&xd * &self.att_dst).sum_dim_intlist(-1, false, xd.kind());
        let mut alpha = a_src.index_select(0, &src) + a_dst.index_select(0, &dst);
        if let (Some(a), Some(w), Some(att)) = (&attr, &self.lin_edge, &self.att_edge) {
            let e = a.matmul(&w.tr()).view([-1, h, c]);
            alpha += (e * att).sum_dim_intlist(-1, false, xs.kind());
        }
        // leaky_relu(x, s) = max(x, s·x) for 0 < s < 1.
        let alpha = alpha.maximum(&(&alpha * self.cfg.negative_slope));
        let alpha = scatter::softmax(&alpha, &dst, n_dst);
        let msg = alpha.unsqueeze(-1) * xs.index_select(0, &src);
        let out = scatter::sum(&msg, &dst, n_dst);
        let out = if self.cfg.concat {
            out.view([-1, h * c])
        } else {
            out.mean_dim(1, false, out.kind())
        };
        out + &self.bias
    }
}
