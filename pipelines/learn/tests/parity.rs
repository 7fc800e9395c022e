//! The layers against PyTorch Geometric 2.8.1: the same inputs and parameters (written by
//! `scripts/parity_fixtures.py` into `tests/fixtures/parity/pyg.json`) give the same outputs
//! within 1e-5.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use graphscaler_learn::gat::{GatConfig, GatConv};
use graphscaler_learn::gcn::GcnConv;
use graphscaler_learn::hetero::HeteroGat;
use graphscaler_learn::{HeteroGraph, Relation, NODE, SERVICE};
use serde_json::Value;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn fixtures() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/parity/pyg.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn tensor(v: &Value) -> Tensor {
    let shape: Vec<i64> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    let data: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    Tensor::from_slice(&data).view(shape.as_slice())
}

fn floats(v: &Value) -> Tensor {
    tensor(v).to_kind(Kind::Float)
}

fn index(v: &Value) -> Tensor {
    tensor(v).to_kind(Kind::Int64)
}

/// Copies every PyG parameter into the variable of the same name; every variable must get one.
fn load(vs: &mut VarStore, params: &Value) {
    let vars = vs.variables();
    let given: BTreeMap<&String, &Value> = params.as_object().unwrap().iter().collect();
    let want: std::collections::BTreeSet<&String> = given.keys().copied().collect();
    let have: std::collections::BTreeSet<&String> = vars.keys().collect();
    assert_eq!(want, have, "parameter names differ from PyG's");
    tch::no_grad(|| {
        for (name, t) in &vars {
            let mut t = t.shallow_clone();
            t.copy_(&floats(given[name]));
        }
    });
}

fn close(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.size(), b.size(), "{what}: shapes");
    let diff = (a - b).abs().max().double_value(&[]);
    assert!(diff <= 1e-5, "{what}: max |Δ| = {diff:e}");
}

fn graph(f: &Value) -> HeteroGraph {
    let g = &f["graph"];
    let (x_service, x_node) = (floats(&g["x_service"]), floats(&g["x_node"]));
    HeteroGraph {
        services: x_service.size()[0],
        nodes: x_node.size()[0],
        graphs: 1,
        service_valid: None,
        node_valid: None,
        x_service,
        x_node,
        edges: vec![
            (
                Relation::CALLS,
                index(&g["calls"]),
                floats(&g["calls_attr"]),
            ),
            (
                Relation::RUNS_ON,
                index(&g["runs_on"]),
                floats(&g["runs_on_attr"]),
            ),
            (
                Relation::HOSTS,
                index(&g["hosts"]),
                floats(&g["hosts_attr"]),
            ),
        ],
        global: Tensor::zeros([1, 2], (Kind::Float, Device::Cpu)),
        time: Tensor::zeros([1], (Kind::Double, Device::Cpu)),
    }
}

#[test]
fn gat_matches_pyg_on_a_same_type_relation_with_edge_attributes_and_self_loops() {
    let f = fixtures();
    let g = graph(&f);
    let l = &f["layers"]["gat_calls"];
    let mut vs = VarStore::new(Device::Cpu);
    let conv = GatConv::new(&vs.root(), GatConfig::same_type(7, 8, 4, Some(3)));
    load(&mut vs, &l["params"]);
    let (_, ei, ea) = &g.edges[0];
    close(
        &conv.forward(&g.x_service, &g.x_service, ei, Some(ea)),
        &floats(&l["out"]),
        "gat_calls",
    );
}

#[test]
fn gat_matches_pyg_on_a_bipartite_relation() {
    let f = fixtures();
    let g = graph(&f);
    let l = &f["layers"]["gat_runs_on"];
    let mut vs = VarStore::new(Device::Cpu);
    let conv = GatConv::new(&vs.root(), GatConfig::bipartite(7, 3, 8, 4, Some(1)));
    load(&mut vs, &l["params"]);
    let (_, ei, ea) = &g.edges[1];
    close(
        &conv.forward(&g.x_service, &g.x_node, ei, Some(ea)),
        &floats(&l["out"]),
        "gat_runs_on",
    );
}

#[test]
fn gat_matches_pyg_without_edge_attributes_averaging_heads() {
    let f = fixtures();
    let g = graph(&f);
    let l = &f["layers"]["gat_no_edge_attr_mean_heads"];
    let mut vs = VarStore::new(Device::Cpu);
    let mut cfg = GatConfig::same_type(7, 5, 2, None);
    cfg.concat = false;
    let conv = GatConv::new(&vs.root(), cfg);
    load(&mut vs, &l["params"]);
    let (_, ei, _) = &g.edges[0];
    close(
        &conv.forward(&g.x_service, &g.x_service, ei, None),
        &floats(&l["out"]),
        "gat mean heads",
    );
}

#[test]
fn gcn_matches_pyg() {
    let f = fixtures();
    let g = graph(&f);
    let l = &f["layers"]["gcn_calls"];
    let mut vs = VarStore::new(Device::Cpu);
    let conv = GcnConv::new(&vs.root(), 7, 16);
    load(&mut vs, &l["params"]);
    close(
        &conv.forward(&g.x_service, &g.edges[0].1),
        &floats(&l["out"]),
        "gcn",
    );
}

#[test]
fn hetero_conv_sums_per_destination_type_as_pyg() {
    let f = fixtures();
    let g = graph(&f);
    let l = &f["layers"]["hetero_gat_sum"];
    let mut vs = VarStore::new(Device::Cpu);
    let conv = HeteroGat::new(&vs.root(), 7, 3, 8, 4);
    load(&mut vs, &l["params"]);
    let out = conv.forward(&HeteroGat::inputs(&g), &g);
    close(&out[SERVICE], &floats(&l["out_service"]), "hetero service");
    close(&out[NODE], &floats(&l["out_node"]), "hetero node");
}
