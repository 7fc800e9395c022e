#!/usr/bin/env python3
"""Times graphscaler's heterogeneous-GAT encoder, built from PyTorch Geometric's layers, on a graph
the Rust benchmark writes (pipelines/learn/benches/decision.rs runs this and prints the ratio).

    .venv/bin/python scripts/pyg_forward_bench.py GRAPH.json REPS

The model is the same as graphscaler's `GatEncoder` (encoder.rs): per node type a Linear to 128
and ELU; 2 layers of HeteroConv(sum) over GATConv(128, 32, heads=4, edge_dim) per relation
(self-loops on `calls` only), ELU and a residual; pooled = Linear(256, 128) over the mean service
and mean machine embeddings, ELU. Inputs are scaled as encoder.rs's `scale` does. One thread,
no gradients. Prints `p50_ms p99_ms`.
"""
import json
import sys
import time

import torch
from torch import nn
from torch_geometric.nn import GATConv, HeteroConv

D, HEADS, LAYERS = 128, 4, 2
CALLS = ("service", "calls", "service")
RUNS_ON = ("service", "runs_on", "node")
HOSTS = ("node", "hosts", "service")


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.in_service = nn.Linear(7, D)
        self.in_node = nn.Linear(3, D)
        self.layers = nn.ModuleList(
            HeteroConv(
                {
                    CALLS: GATConv(D, D // HEADS, heads=HEADS, edge_dim=3),
                    RUNS_ON: GATConv((D, D), D // HEADS, heads=HEADS, edge_dim=1, add_self_loops=False),
                    HOSTS: GATConv((D, D), D // HEADS, heads=HEADS, edge_dim=1, add_self_loops=False),
                },
                aggr="sum",
            )
            for _ in range(LAYERS)
        )
        self.pool = nn.Linear(2 * D, D)

    def forward(self, xs, xn, edges, attrs):
        ln = lambda t: torch.log1p(t.clamp_min(0)) / 7
        xs = torch.cat([xs[:, 0:1] / 100, xs[:, 1:2] / 100, ln(xs[:, 2:3]), xs[:, 3:4],
                        xs[:, 4:5].clamp(0, 4), xs[:, 5:6].clamp(0, 60) / 10, xs[:, 6:7]], 1)
        xn = torch.cat([xn[:, 0:1] / 8, xn[:, 1:2] / 32, xn[:, 2:3]], 1)
        a = attrs[CALLS]
        attrs = {CALLS: torch.cat([ln(a[:, 0:1]), ln(a[:, 1:2]), a[:, 2:3]], 1),
                 RUNS_ON: attrs[RUNS_ON] / 10, HOSTS: attrs[HOSTS] / 10}
        h = {"service": torch.nn.functional.elu(self.in_service(xs)),
             "node": torch.nn.functional.elu(self.in_node(xn))}
        for layer in self.layers:
            out = layer(h, edges, edge_attr_dict=attrs)
            h = {k: torch.nn.functional.elu(out[k]) + h[k] for k in h}
        pooled = torch.cat([h["service"].mean(0), h["node"].mean(0)])
        return h["service"], h["node"], torch.nn.functional.elu(self.pool(pooled))


def main():
    torch.set_num_threads(1)
    g = json.loads(open(sys.argv[1]).read())
    reps = int(sys.argv[2])
    f = lambda k, w: torch.tensor(g[k], dtype=torch.float32).view(-1, w)
    xs, xn = f("x_service", 7), f("x_node", 3)
    edges, attrs = {}, {}
    for key, name, w in [(CALLS, "calls", 3), (RUNS_ON, "runs_on", 1), (HOSTS, "hosts", 1)]:
        edges[key] = torch.tensor(g[name], dtype=torch.long).view(2, -1)
        attrs[key] = f(name + "_attr", w)
    model = Encoder().eval()
    times = []
    with torch.no_grad():
        for i in range(reps + 5):
            t0 = time.perf_counter()
            model(xs, xn, edges, attrs)
            if i >= 5:
                times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
    print(f"{q(0.5):.4f} {q(0.99):.4f}")


if __name__ == "__main__":
    main()
