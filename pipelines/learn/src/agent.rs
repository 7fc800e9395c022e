//! The learned autoscaler: an encoder ([`EncoderKind`]) and the hybrid-action heads
//! ([`PolicyHeads`]) over batches of snapshot windows, with what it needs to be saved, loaded and
//! checked against the cluster it acts on.

use std::path::Path;

use graphscaler_schemas::Snapshot;
use serde::{Deserialize, Serialize};
use tch::nn::{self, VarStore};
use tch::{Device, Tensor};

use crate::checkpoint::{self, CheckpointError, Manifest};
use crate::decide::ActionRules;
use crate::dysat::{Dysat, DysatConfig};
use crate::encoder::{Embeddings, Encoder, GatEncoder, GatEncoderConfig, MlpFlat};
use crate::gcn_encoder::{GcnEncoder, GcnEncoderConfig};
use crate::graph::HeteroGraph;
use crate::graph_sac::SacActor;
use crate::policy::{ActionTensors, Masks, PolicyHeads, SampleMask, Step};
use crate::tgat::{Tgat, TgatConfig};

/// Which encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    /// Heterogeneous GAT (the main model).
    Gat,
    /// Heterogeneous GCN.
    Gcn,
    /// DySAT over a window of snapshots.
    Dysat,
    /// TGAT over a window of snapshots.
    Tgat,
    /// The flat MLP (no topology).
    Mlp,
}

impl EncoderKind {
    /// Parses `gat`, `gcn`, `dysat`, `tgat` or `mlp`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gat" => Some(Self::Gat),
            "gcn" => Some(Self::Gcn),
            "dysat" => Some(Self::Dysat),
            "tgat" => Some(Self::Tgat),
            "mlp" => Some(Self::Mlp),
            _ => None,
        }
    }

    /// The name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Gat => "gat",
            Self::Gcn => "gcn",
            Self::Dysat => "dysat",
            Self::Tgat => "tgat",
            Self::Mlp => "mlp",
        }
    }
}

/// Which heads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// The hybrid-action heads with a Beta Δcpu and a critic (PPO, A2C).
    #[default]
    Ppo,
    /// The discrete actor of SAC (Δcpu in bins; the critics are not part of the policy).
    Sac,
}

/// Everything that shapes a model, and what it was trained on (kept in the manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// The encoder.
    pub encoder: EncoderKind,
    /// Embedding width.
    pub dim: i64,
    /// Attention heads (GAT, DySAT).
    pub heads: i64,
    /// Graph layers.
    pub layers: usize,
    /// Snapshots read per decision (DySAT's `T`; 1 otherwise).
    pub window: usize,
    /// Hidden width of the heads.
    pub hidden: i64,
    /// Node type names, by CPU model id.
    pub node_types: Vec<String>,
    /// Services, in snapshot order.
    pub services: Vec<String>,
    /// The topology's name.
    pub topology: String,
    /// The action rules it was trained under.
    pub rules: ActionRules,
    /// The heads.
    #[serde(default)]
    pub head: HeadKind,
    /// The actor reads the global scalars (cluster CPU, SLO-violation rate) besides the graph, as
    /// the critic does (seed §3.1). `false` in checkpoints written before it existed, whose actors
    /// read the graph alone; `graphscaler train --no-actor-global` for the ablation.
    #[serde(default)]
    pub actor_global: bool,
    /// The node types it was trained on, by CPU model id (their name, CPU model, speed,
    /// allocatable CPU and memory, and count): what a cluster it serves is compared with. Empty
    /// in checkpoints written before it existed.
    #[serde(default)]
    pub node_type_features: Vec<graphscaler_twin::config::NodeTypeConfig>,
    /// Every topology it was trained on, with its services, when more than one (`graphscaler
    /// train --topology A --topology B ...`: a distribution); empty for one (`topology`,
    /// `services`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topologies: Vec<TrainedTopology>,
}

/// One of the topologies a model was trained on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainedTopology {
    /// Its name (the file's stem).
    pub name: String,
    /// Its services, in snapshot order.
    pub services: Vec<String>,
}

impl AgentSpec {
    /// Whether it was trained on the topology called `name`.
    pub fn trained_on(&self, name: &str) -> bool {
        self.topology == name || self.topologies.iter().any(|t| t.name == name)
    }

    /// Whether it was trained on exactly these services (those of one of its topologies).
    pub fn trained_on_services(&self, services: &[String]) -> bool {
        self.services == services || self.topologies.iter().any(|t| t.services == services)
    }

    /// The specification in the manifest of the checkpoint at `path` (`config.agent`); an error
    /// names a manifest that has none or one that does not parse.
    pub fn of_checkpoint(path: &Path) -> Result<Self, CheckpointError> {
        let m = checkpoint::manifest(path)?;
        m.config
            .get("agent")
            .cloned()
            .ok_or_else(|| CheckpointError::Manifest {
                path: checkpoint::file(path, "json"),
                message: "no `config.agent`: not a graph agent's checkpoint".into(),
            })
            .and_then(|v| {
                serde_json::from_value(v).map_err(|e| CheckpointError::Manifest {
                    path: checkpoint::file(path, "json"),
                    message: format!("config.agent: {e}"),
                })
            })
    }

    /// The defaults of `encoder` for a cluster.
    pub fn new(
        encoder: EncoderKind,
        topology: String,
        services: Vec<String>,
        node_types: Vec<String>,
        rules: ActionRules,
    ) -> Self {
        let (layers, window) = match encoder {
            EncoderKind::Dysat => (1, DysatConfig::default().window),
            EncoderKind::Tgat => (TgatConfig::default().layers, TgatConfig::default().window),
            _ => (2, 1),
        };
        Self {
            encoder,
            dim: 128,
            heads: 4,
            layers,
            window,
            hidden: 128,
            node_types,
            services,
            topology,
            rules,
            head: HeadKind::Ppo,
            actor_global: true,
            node_type_features: vec![],
            topologies: vec![],
        }
    }
}

/// One decision's input: the window of graphs (oldest first) and the masks.
#[derive(Debug)]
pub struct Obs {
    /// `window` single graphs.
    pub window: Vec<HeteroGraph>,
    /// The masks.
    pub mask: SampleMask,
}

impl Obs {
    /// The input of `window` (oldest first) under `mask`.
    pub fn new(window: &[&Snapshot], mask: SampleMask) -> Self {
        Self {
            window: window
                .iter()
                .map(|s| HeteroGraph::from_snapshot(s, Device::Cpu))
                .collect(),
            mask,
        }
    }
}

/// The model.
#[derive(Debug)]
pub struct GraphAgent {
    /// What shapes it.
    pub spec: AgentSpec,
    encoder: Box<dyn Encoder>,
    heads: Heads,
    /// Every batch is padded to at least these (services, machines): a training on several
    /// topologies pads to the largest, so that an action's index means the same in every batch.
    pad: (i64, i64),
}

#[derive(Debug)]
enum Heads {
    Ppo(PolicyHeads),
    Sac(SacActor),
}

/// The encoder `spec` names, under `p`.
pub fn build_encoder(p: &nn::Path, spec: &AgentSpec) -> Box<dyn Encoder> {
    match spec.encoder {
        EncoderKind::Gat => Box::new(GatEncoder::new(
            p,
            GatEncoderConfig {
                dim: spec.dim,
                heads: spec.heads,
                layers: spec.layers,
            },
        )),
        EncoderKind::Gcn => Box::new(GcnEncoder::new(
            p,
            GcnEncoderConfig {
                dim: spec.dim,
                layers: spec.layers,
            },
        )),
        EncoderKind::Dysat => Box::new(Dysat::new(
            p,
            DysatConfig {
                dim: spec.dim,
                heads: spec.heads,
                layers: spec.layers,
                window: spec.window,
            },
        )),
        EncoderKind::Tgat => Box::new(Tgat::new(
            p,
            TgatConfig {
                dim: spec.dim,
                heads: spec.heads,
                layers: spec.layers,
                window: spec.window,
                ..TgatConfig::default()
            },
        )),
        EncoderKind::Mlp => Box::new(MlpFlat::new(p, spec.dim)),
    }
}

/// Decisions' inputs as batched tensors: the window of graph batches (oldest first), the masks,
/// the newest graphs' machine types `[B, N]` and global scalars `[B, 2]`.
#[derive(Debug)]
pub(crate) struct Inputs {
    pub(crate) window: Vec<HeteroGraph>,
    pub(crate) masks: Masks,
    pub(crate) types: Tensor,
    pub(crate) global: Tensor,
}

impl Inputs {
    /// The batch of `obs` for `k` node types, every graph padded to at least `pad` (services,
    /// machines): graphs of different clusters are padded to the largest.
    pub(crate) fn new(obs: &[&Obs], pad: (i64, i64), k: i64) -> Self {
        let t = obs[0].window.len();
        let window: Vec<HeteroGraph> = (0..t)
            .map(|i| {
                let gs: Vec<&HeteroGraph> = obs.iter().map(|o| &o.window[i]).collect();
                HeteroGraph::batch_padded(&gs, pad.0, pad.1)
                    .expect("observations are single graphs")
            })
            .collect();
        let last = &window[t - 1];
        let s = last.services;
        let masks: Vec<&SampleMask> = obs.iter().map(|o| &o.mask).collect();
        Self {
            types: last.node_types(k),
            global: last.global.shallow_clone(),
            masks: Masks::stack(&masks, s, k),
            window,
        }
    }

    /// The window as references, for an encoder.
    pub(crate) fn refs(&self) -> Vec<&HeteroGraph> {
        self.window.iter().collect()
    }
}

impl GraphAgent {
    /// A freshly initialised model under `p`.
    pub fn new(p: &nn::Path, spec: AgentSpec) -> Self {
        let encoder = build_encoder(&(p / "encoder"), &spec);
        let k = spec.node_types.len().max(1) as i64;
        let heads = match spec.head {
            HeadKind::Ppo => Heads::Ppo(PolicyHeads::new(
                &(p / "heads"),
                spec.dim,
                k,
                spec.hidden,
                spec.actor_global,
            )),
            HeadKind::Sac => Heads::Sac(SacActor::new(
                &(p / "heads"),
                spec.dim,
                k,
                spec.hidden,
                spec.actor_global,
            )),
        };
        Self {
            spec,
            encoder,
            heads,
            pad: (0, 0),
        }
    }

    /// Pads every batch to at least `services` services and `nodes` machines (training on
    /// several topologies: the largest's).
    pub fn pad_to(&mut self, services: usize, nodes: usize) {
        self.pad = (services as i64, nodes as i64);
    }

    fn node_types(&self) -> i64 {
        self.spec.node_types.len().max(1) as i64
    }

    fn ppo(&self) -> &PolicyHeads {
        match &self.heads {
            Heads::Ppo(h) => h,
            Heads::Sac(_) => panic!("the PPO/A2C update needs the PPO heads; this model has SAC's"),
        }
    }

    /// SAC's log π over the joint actions `[B, S·K·15 + 1]`.
    pub(crate) fn sac_log_probs(&self, x: &Inputs) -> Tensor {
        let e = self.encoder.encode_window(&x.refs());
        match &self.heads {
            Heads::Sac(h) => h.log_probs(&e, &x.types, &x.global, &x.masks),
            Heads::Ppo(_) => panic!("the SAC update needs the SAC heads; this model has PPO's"),
        }
    }

    /// The batch of `obs` for this model's cluster.
    pub(crate) fn inputs(&self, obs: &[&Obs]) -> Inputs {
        Inputs::new(obs, self.pad, self.node_types())
    }

    fn encode(&self, x: &Inputs) -> (Embeddings, Tensor, Tensor) {
        (
            self.encoder.encode_window(&x.refs()),
            x.types.shallow_clone(),
            x.global.shallow_clone(),
        )
    }

    /// Draws one action per input.
    pub fn act(&self, obs: &[&Obs], deterministic: bool) -> Step {
        let x = self.inputs(obs);
        let (e, types, global) = self.encode(&x);
        match &self.heads {
            Heads::Ppo(h) => h.act(&e, &types, &global, &x.masks, deterministic),
            Heads::Sac(h) => h.act(&e, &types, &global, &x.masks, deterministic),
        }
    }

    /// log π, entropy and V of `actions` `[B]` (the PPO heads').
    pub fn evaluate(&self, obs: &[&Obs], actions: &ActionTensors) -> (Tensor, Tensor, Tensor) {
        let x = self.inputs(obs);
        let (e, types, global) = self.encode(&x);
        self.ppo().evaluate(&e, &types, &global, &x.masks, actions)
    }

    /// What behaviour cloning fits to `actions` (the PPO heads').
    pub fn imitation(&self, obs: &[&Obs], actions: &ActionTensors) -> crate::policy::Imitation {
        let x = self.inputs(obs);
        let (e, types, global) = self.encode(&x);
        self.ppo().imitation(&e, &types, &global, &x.masks, actions)
    }

    /// Whether the model has the PPO heads (PPO, A2C) rather than SAC's actor.
    pub fn has_ppo_heads(&self) -> bool {
        matches!(self.heads, Heads::Ppo(_))
    }

    /// V `[B]` (the PPO heads' critic).
    pub fn value(&self, obs: &[&Obs]) -> Tensor {
        let x = self.inputs(obs);
        let (e, types, global) = self.encode(&x);
        self.ppo().value(&e, &types, &global, &x.masks)
    }

    /// Writes `path.safetensors` and `path.json`.
    pub fn save(
        &self,
        path: &Path,
        vs: &VarStore,
        algo: &str,
        produced_by: &str,
        extra: serde_json::Value,
    ) -> Result<Manifest, CheckpointError> {
        let mut config = std::collections::BTreeMap::new();
        config.insert(
            "agent".to_string(),
            serde_json::to_value(&self.spec).unwrap_or_default(),
        );
        config.insert("training".to_string(), extra);
        checkpoint::save(
            path,
            vs,
            Manifest {
                format: checkpoint::FORMAT,
                algo: algo.into(),
                encoder: self.spec.encoder.name().into(),
                schema_version: graphscaler_schemas::SCHEMA_VERSION,
                topology: self.spec.topology.clone(),
                config,
                params: Default::default(),
                sha256: None,
                produced_by: produced_by.into(),
                act: None,
            },
        )
    }

    /// Loads a checkpoint written by [`GraphAgent::save`], checking it against `topology` (`*`
    /// for any).
    pub fn load(
        path: &Path,
        topology: &str,
    ) -> Result<(Self, VarStore, Manifest), CheckpointError> {
        let spec = AgentSpec::of_checkpoint(path)?;
        let mut vs = VarStore::new(Device::Cpu);
        let agent = GraphAgent::new(&vs.root(), spec);
        let m = checkpoint::load(path, &mut vs, topology)?;
        Ok((agent, vs, m))
    }
}
