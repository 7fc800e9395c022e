#!/usr/bin/env python3
"""Writes the fixtures that hold graphscaler's GNN layers to PyTorch Geometric.

    .venv/bin/python scripts/parity_fixtures.py   # (scripts/setup.sh makes the venv)

For fixed inputs and seeded weights it runs PyG's GATConv (same-type relation with edge
attributes and self-loops; bipartite relation without), GCNConv, and HeteroConv summing GAT
layers over graphscaler's three relations, and stores inputs, every parameter (by PyG's name) and
the outputs as JSON in tests/fixtures/parity/. The Rust layers load the same parameters and must
give the same outputs within 1e-5 (pipelines/learn/tests/parity.rs).
"""
import json
import pathlib

import torch
import torch_geometric
from torch_geometric.nn import GATConv, GCNConv, HeteroConv

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "parity"


def t(x):
    return {"shape": list(x.shape), "data": x.detach().reshape(-1).tolist()}


def params(m):
    return {k: t(v) for k, v in m.state_dict().items()}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(7)
    torch.set_default_dtype(torch.float32)
    # A small heterogeneous graph: 6 services (7 features), 3 machines (3 features).
    xs = torch.randn(6, 7)
    xn = torch.randn(3, 3)
    # `calls`, with a self-loop (1 -> 1) that GATConv removes before adding its own, and a
    # service (5) that nothing calls.
    calls = torch.tensor([[0, 0, 1, 2, 3, 4, 1, 0], [1, 2, 3, 3, 4, 2, 1, 4]])
    calls_attr = torch.rand(calls.size(1), 3)
    runs_on = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 0, 1, 1, 2, 2]])
    runs_attr = torch.tensor([[1.0], [2.0], [1.0], [3.0], [1.0], [1.0]])
    hosts = runs_on.flip(0)
    graph = {
        "x_service": t(xs),
        "x_node": t(xn),
        "calls": t(calls),
        "calls_attr": t(calls_attr),
        "runs_on": t(runs_on),
        "runs_on_attr": t(runs_attr),
        "hosts": t(hosts),
        "hosts_attr": t(runs_attr),
    }
    fixtures = {}

    gat = GATConv(7, 8, heads=4, edge_dim=3)
    with torch.no_grad():
        gat.bias.normal_()
    fixtures["gat_calls"] = {"params": params(gat), "out": t(gat(xs, calls, calls_attr))}

    gat_bi = GATConv((7, 3), 8, heads=4, edge_dim=1, add_self_loops=False)
    with torch.no_grad():
        gat_bi.bias.normal_()
    fixtures["gat_runs_on"] = {
        "params": params(gat_bi),
        "out": t(gat_bi((xs, xn), runs_on, runs_attr)),
    }

    gat_mean = GATConv(7, 5, heads=2, concat=False)
    fixtures["gat_no_edge_attr_mean_heads"] = {"params": params(gat_mean), "out": t(gat_mean(xs, calls))}

    gcn = GCNConv(7, 16)
    with torch.no_grad():
        gcn.bias.normal_()
    fixtures["gcn_calls"] = {"params": params(gcn), "out": t(gcn(xs, calls))}

    hetero = HeteroConv(
        {
            ("service", "calls", "service"): GATConv(7, 8, heads=4, edge_dim=3),
            ("service", "runs_on", "node"): GATConv((7, 3), 8, heads=4, edge_dim=1, add_self_loops=False),
            ("node", "hosts", "service"): GATConv((3, 7), 8, heads=4, edge_dim=1, add_self_loops=False),
        },
        aggr="sum",
    )
    out = hetero(
        {"service": xs, "node": xn},
        {("service", "calls", "service"): calls, ("service", "runs_on", "node"): runs_on, ("node", "hosts", "service"): hosts},
        edge_attr_dict={("service", "calls", "service"): calls_attr, ("service", "runs_on", "node"): runs_attr, ("node", "hosts", "service"): runs_attr},
    )
    fixtures["hetero_gat_sum"] = {
        "params": params(hetero),
        "out_service": t(out["service"]),
        "out_node": t(out["node"]),
    }

    doc = {
        "generated_by": "scripts/parity_fixtures.py",
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "graph": graph,
        "layers": fixtures,
    }
    (OUT / "pyg.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT / 'pyg.json'} (torch {torch.__version__}, torch_geometric {torch_geometric.__version__})")


if __name__ == "__main__":
    main()
