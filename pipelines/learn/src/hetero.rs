//! One layer per relation, summed per destination node type: PyG's `HeteroConv(aggr="sum")`,
//! with its parameter names (`convs.<src___name___dst>.…`).

use std::collections::BTreeMap;

use tch::nn;
use tch::Tensor;

use crate::gat::{GatConfig, GatConv};
use crate::graph::{HeteroGraph, Relation, NODE, SERVICE};

/// A heterogeneous GAT layer over graphscaler's three relations.
#[derive(Debug)]
pub struct HeteroGat {
    convs: Vec<(Relation, GatConv)>,
}

impl HeteroGat {
    /// Inputs of `in_service` and `in_node` features; `heads` × `out` channels per relation.
    /// `calls` adds self-loops (one node type); `runs_on` and `hosts` are bipartite.
    pub fn new(p: &nn::Path, in_service: i64, in_node: i64, out: i64, heads: i64) -> Self {
        let dim = |t: &str| if t == SERVICE { in_service } else { in_node };
        let convs = Relation::ALL
            .iter()
            .map(|r| {
                let cfg = if r.src == r.dst {
                    GatConfig::same_type(dim(r.src), out, heads, Some(r.edge_dim()))
                } else {
                    GatConfig::bipartite(dim(r.src), dim(r.dst), out, heads, Some(r.edge_dim()))
                };
                (*r, GatConv::new(&(p / "convs" / r.key()), cfg))
            })
            .collect();
        Self { convs }
    }

    /// Runs every relation's layer on `x` (features by node type) and sums per destination type.
    pub fn forward(
        &self,
        x: &BTreeMap<&'static str, Tensor>,
        g: &HeteroGraph,
    ) -> BTreeMap<&'static str, Tensor> {
        let mut out: BTreeMap<&'static str, Tensor> = BTreeMap::new();
        for (r, conv) in &self.convs {
            let Some((_, index, attr)) = g.edges.iter().find(|(e, _, _)| e == r) else {
                continue;
            };
            let y = conv.forward(&x[r.src], &x[r.dst], index, Some(attr));
            match out.remove(r.dst) {
                Some(prev) => out.insert(r.dst, prev + y),
                None => out.insert(r.dst, y),
            };
        }
        out
    }

    /// The input features of `g` keyed by node type.
    pub fn inputs(g: &HeteroGraph) -> BTreeMap<&'static str, Tensor> {
        BTreeMap::from([
            (SERVICE, g.x_service.shallow_clone()),
            (NODE, g.x_node.shallow_clone()),
        ])
    }
}
