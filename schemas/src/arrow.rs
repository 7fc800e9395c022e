//! The Arrow schema of stored snapshots: one row per [`Snapshot`], the graph in list columns.
//!
//! | column | type |
//! |---|---|
//! | `schema_version` | UInt32 |
//! | `time_s`, `window_s` | Float64 |
//! | `services`, `nodes` | List<Utf8> |
//! | `service_x` | List<FixedSizeList<Float32, 7>> |
//! | `replicas_spec`, `replicas_ready` | List<UInt32> |
//! | `node_x` | List<FixedSizeList<Float32, 3>> |
//! | `calls_src`, `calls_dst`, `runs_on_src`, `runs_on_dst`, `hosts_src`, `hosts_dst` | List<UInt32> |
//! | `calls_attr` | List<FixedSizeList<Float32, 3>> |
//! | `runs_on_pods`, `hosts_pods` | List<Float32> |
//! | `global` | FixedSizeList<Float32, 2> |
//! | `cpu_request_cores` | List<Float32> (optional: absent in older files) |
//! | `entry` | FixedSizeList<Float32, 2>, nullable (optional: absent in older files) |
//! | `cpu_limit_cores` | List<Float32> (optional) |
//! | `service_missing` | List<Boolean> (optional; empty: every service known) |
//! | `global_missing` | Boolean (optional) |
//! | `decided_by` | Utf8, nullable (optional): the policy whose decision on this snapshot is recorded; null: none recorded |
//! | `decision` | List<Utf8>, nullable (optional): that decision's actions as the action topic carries them (JSON, absolute); empty: it decided nothing |
//! | `reward` | Float64, nullable (optional): the reward observed over the next window (of the next snapshot); null: not known |
//! | `reward_terms` | FixedSizeList<Float32, 4>, nullable (optional): its SLO_vio, Slack, Overshoot and ReplicaLag |
//! | `entry_rps` | Float32, nullable (optional): the request rate into the entry service; null: unknown |
//!
//! A row with a decision and a reward is a transition `(s_t, a_t, r_{t+1})`; `s_{t+1}` is the
//! next row.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};

fn list(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, false)))
}

fn fixed(n: i32) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), n)
}

/// Columns added after the first stored files: a reader takes a file without them (the
/// snapshot's field is then unknown: empty or `None`).
pub const OPTIONAL_COLUMNS: [&str; 10] = [
    "cpu_request_cores",
    "entry",
    "cpu_limit_cores",
    "service_missing",
    "global_missing",
    "decided_by",
    "decision",
    "reward",
    "reward_terms",
    "entry_rps",
];

/// The schema.
pub fn snapshot_schema() -> Schema {
    let mut fields = vec![
        Field::new("schema_version", DataType::UInt32, false),
        Field::new("time_s", DataType::Float64, false),
        Field::new("window_s", DataType::Float64, false),
        Field::new("services", list(DataType::Utf8), false),
        Field::new("service_x", list(fixed(7)), false),
        Field::new("replicas_spec", list(DataType::UInt32), false),
        Field::new("replicas_ready", list(DataType::UInt32), false),
        Field::new("nodes", list(DataType::Utf8), false),
        Field::new("node_x", list(fixed(3)), false),
    ];
    for rel in ["calls", "runs_on", "hosts"] {
        fields.push(Field::new(
            format!("{rel}_src"),
            list(DataType::UInt32),
            false,
        ));
        fields.push(Field::new(
            format!("{rel}_dst"),
            list(DataType::UInt32),
            false,
        ));
    }
    fields.push(Field::new("calls_attr", list(fixed(3)), false));
    fields.push(Field::new("runs_on_pods", list(DataType::Float32), false));
    fields.push(Field::new("hosts_pods", list(DataType::Float32), false));
    fields.push(Field::new("global", fixed(2), false));
    fields.push(Field::new(
        "cpu_request_cores",
        list(DataType::Float32),
        false,
    ));
    fields.push(Field::new("entry", fixed(2), true));
    fields.push(Field::new(
        "cpu_limit_cores",
        list(DataType::Float32),
        false,
    ));
    fields.push(Field::new(
        "service_missing",
        list(DataType::Boolean),
        false,
    ));
    fields.push(Field::new("global_missing", DataType::Boolean, false));
    fields.push(Field::new("decided_by", DataType::Utf8, true));
    fields.push(Field::new("decision", list(DataType::Utf8), true));
    fields.push(Field::new("reward", DataType::Float64, true));
    fields.push(Field::new("reward_terms", fixed(4), true));
    fields.push(Field::new("entry_rps", DataType::Float32, true));
    Schema::new(fields)
}
