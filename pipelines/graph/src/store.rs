//! Snapshots in Parquet files, with the Arrow schema of `graphscaler_schemas::arrow`: each row a
//! snapshot and, where known, the decision taken on it and the reward observed over the next
//! window — a [`Transition`]. [`crate::recorder`] appends them to a directory as windows close;
//! [`read_paths`] reads files, directories and globs back in time order.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, FixedSizeListBuilder, Float32Builder, Float64Builder, ListBuilder,
    StringBuilder, UInt32Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, UInt32Type};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, RecordBatch, UInt32Array,
};
use arrow_schema::{DataType, Field};
use graphscaler_schemas::arrow::{snapshot_schema, OPTIONAL_COLUMNS};
use graphscaler_schemas::{Action, EdgeSet, Snapshot};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

/// What went wrong storing or loading snapshots.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or created.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a Parquet file, or a broken one.
    #[error("{path}: not a readable Parquet file: {message}")]
    Parquet {
        /// The file.
        path: String,
        /// The cause.
        message: String,
    },
    /// A Parquet file whose columns are not those of stored snapshots.
    #[error("{path}: not a graphscaler snapshot file: {message}")]
    Schema {
        /// The file.
        path: String,
        /// What differs.
        message: String,
    },
}

/// The decision a policy took on a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedDecision {
    /// The policy (its action source, `policy/NAME`).
    pub by: String,
    /// Its actions as published (absolute); empty: it decided to do nothing.
    pub actions: Vec<Action>,
}

/// The reward observed over the window after a snapshot (`reward_of_snapshot` of the next).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordedReward {
    /// The weighted reward.
    pub value: f64,
    /// SLO_vio, Slack, Overshoot, ReplicaLag.
    pub terms: [f32; 4],
}

/// One stored row: a snapshot, the decision taken on it and the reward that followed (each
/// `None` where not recorded: a plain snapshot store, or the last window of a run).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The snapshot `s_t`.
    pub snapshot: Snapshot,
    /// The decision `a_t`.
    pub decision: Option<RecordedDecision>,
    /// The reward `r_{t+1}`.
    pub reward: Option<RecordedReward>,
}

impl Transition {
    /// A snapshot with nothing recorded beside it.
    pub fn plain(snapshot: Snapshot) -> Self {
        Self {
            snapshot,
            decision: None,
            reward: None,
        }
    }
}

fn item(dt: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", dt, false))
}

fn u32_list() -> ListBuilder<UInt32Builder> {
    ListBuilder::new(UInt32Builder::new()).with_field(item(DataType::UInt32))
}

fn f32_list() -> ListBuilder<Float32Builder> {
    ListBuilder::new(Float32Builder::new()).with_field(item(DataType::Float32))
}

fn fixed_list(n: i32) -> ListBuilder<FixedSizeListBuilder<Float32Builder>> {
    let inner =
        FixedSizeListBuilder::new(Float32Builder::new(), n).with_field(item(DataType::Float32));
    ListBuilder::new(inner).with_field(item(DataType::FixedSizeList(item(DataType::Float32), n)))
}

fn push_fixed<const N: usize>(
    b: &mut ListBuilder<FixedSizeListBuilder<Float32Builder>>,
    rows: impl Iterator<Item = [f32; N]>,
) {
    for r in rows {
        b.values().values().append_slice(&r);
        b.values().append(true);
    }
    b.append(true);
}

/// Writes `snapshots` to `path` (one row each, nothing recorded beside them).
pub fn write(path: &Path, snapshots: &[Snapshot]) -> Result<(), StoreError> {
    let rows: Vec<Transition> = snapshots.iter().cloned().map(Transition::plain).collect();
    write_transitions(path, &rows)
}

/// Writes `rows` to `path`, replacing it: written beside it first and renamed over it, so that
/// a reader (or a crash) sees the old file or the new one, never half of one.
pub fn write_transitions(path: &Path, rows: &[Transition]) -> Result<(), StoreError> {
    let p = path.display().to_string();
    let snapshots: Vec<&Snapshot> = rows.iter().map(|r| &r.snapshot).collect();
    let schema = Arc::new(snapshot_schema());
    let mut services = ListBuilder::new(StringBuilder::new()).with_field(item(DataType::Utf8));
    let mut nodes = ListBuilder::new(StringBuilder::new()).with_field(item(DataType::Utf8));
    let mut service_x = fixed_list(7);
    let mut replicas: Vec<ListBuilder<UInt32Builder>> = (0..2).map(|_| u32_list()).collect();
    let mut node_x = fixed_list(3);
    let mut src_dst: Vec<ListBuilder<UInt32Builder>> = (0..6).map(|_| u32_list()).collect();
    let mut calls_attr = fixed_list(3);
    let mut runs_on_pods = f32_list();
    let mut hosts_pods = f32_list();
    let mut global =
        FixedSizeListBuilder::new(Float32Builder::new(), 2).with_field(item(DataType::Float32));
    let mut requests = f32_list();
    let mut entry =
        FixedSizeListBuilder::new(Float32Builder::new(), 2).with_field(item(DataType::Float32));
    let mut limits = f32_list();
    let mut missing = ListBuilder::new(BooleanBuilder::new()).with_field(item(DataType::Boolean));
    let mut global_missing = BooleanBuilder::new();
    let mut decided_by = StringBuilder::new();
    let mut decision = ListBuilder::new(StringBuilder::new()).with_field(item(DataType::Utf8));
    let mut reward = Float64Builder::new();
    let mut terms =
        FixedSizeListBuilder::new(Float32Builder::new(), 4).with_field(item(DataType::Float32));
    for r in rows {
        match &r.decision {
            Some(d) => {
                decided_by.append_value(&d.by);
                for a in &d.actions {
                    let json = serde_json::to_string(a).map_err(|e| StoreError::Schema {
                        path: p.clone(),
                        message: format!("an action of {} does not encode: {e}", d.by),
                    })?;
                    decision.values().append_value(json);
                }
                decision.append(true);
            }
            None => {
                decided_by.append_null();
                decision.append(false);
            }
        }
        match r.reward {
            Some(w) => {
                reward.append_value(w.value);
                terms.values().append_slice(&w.terms);
                terms.append(true);
            }
            None => {
                reward.append_null();
                terms.values().append_slice(&[0.0; 4]);
                terms.append(false);
            }
        }
    }
    for s in snapshots.iter().copied() {
        limits.values().append_slice(&s.cpu_limit_cores);
        limits.append(true);
        for m in &s.service_missing {
            missing.values().append_value(*m);
        }
        missing.append(true);
        global_missing.append_value(s.global_missing);
        for n in &s.services {
            services.values().append_value(n);
        }
        services.append(true);
        for n in &s.nodes {
            nodes.values().append_value(n);
        }
        nodes.append(true);
        push_fixed(&mut service_x, s.service_x.iter().copied());
        for (b, v) in replicas
            .iter_mut()
            .zip([&s.replicas_spec, &s.replicas_ready])
        {
            b.values().append_slice(v);
            b.append(true);
        }
        push_fixed(&mut node_x, s.node_x.iter().copied());
        for (k, set) in [&s.calls, &s.runs_on, &s.hosts].into_iter().enumerate() {
            src_dst[2 * k].values().append_slice(&set.src);
            src_dst[2 * k].append(true);
            src_dst[2 * k + 1].values().append_slice(&set.dst);
            src_dst[2 * k + 1].append(true);
        }
        push_fixed(
            &mut calls_attr,
            s.calls
                .attr
                .iter()
                .map(|a| std::array::from_fn::<f32, 3, _>(|i| a.get(i).copied().unwrap_or(0.0))),
        );
        for (b, set) in [(&mut runs_on_pods, &s.runs_on), (&mut hosts_pods, &s.hosts)] {
            for a in &set.attr {
                b.values().append_value(a.first().copied().unwrap_or(0.0));
            }
            b.append(true);
        }
        global.values().append_slice(&s.global);
        global.append(true);
        requests.values().append_slice(&s.cpu_request_cores);
        requests.append(true);
        match s.entry {
            Some(e) => {
                entry.values().append_slice(&e);
                entry.append(true);
            }
            None => {
                entry.values().append_slice(&[0.0; 2]);
                entry.append(false);
            }
        }
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(
            snapshots.iter().map(|s| s.schema_version),
        )),
        Arc::new(Float64Array::from_iter_values(
            snapshots.iter().map(|s| s.time_s),
        )),
        Arc::new(Float64Array::from_iter_values(
            snapshots.iter().map(|s| s.window_s),
        )),
        Arc::new(services.finish()),
        Arc::new(service_x.finish()),
    ];
    for mut b in replicas {
        cols.push(Arc::new(b.finish()));
    }
    cols.extend([
        Arc::new(nodes.finish()) as ArrayRef,
        Arc::new(node_x.finish()),
    ]);
    for mut b in src_dst {
        cols.push(Arc::new(b.finish()));
    }
    cols.push(Arc::new(calls_attr.finish()));
    cols.push(Arc::new(runs_on_pods.finish()));
    cols.push(Arc::new(hosts_pods.finish()));
    cols.push(Arc::new(global.finish()));
    cols.push(Arc::new(requests.finish()));
    cols.push(Arc::new(entry.finish()));
    cols.push(Arc::new(limits.finish()));
    cols.push(Arc::new(missing.finish()));
    cols.push(Arc::new(global_missing.finish()));
    cols.push(Arc::new(decided_by.finish()));
    cols.push(Arc::new(decision.finish()));
    cols.push(Arc::new(reward.finish()));
    cols.push(Arc::new(terms.finish()));
    cols.push(Arc::new(Float32Array::from_iter(
        snapshots.iter().map(|s| s.entry_rps),
    )));
    let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| StoreError::Schema {
        path: p.clone(),
        message: e.to_string(),
    })?;
    let io = |source| StoreError::Io {
        path: p.clone(),
        source,
    };
    let tmp = tmp_path(path);
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let parquet = |e: parquet::errors::ParquetError| StoreError::Parquet {
        path: p.clone(),
        message: e.to_string(),
    };
    let mut w = ArrowWriter::try_new(file, schema, None).map_err(parquet)?;
    w.write(&batch).map_err(parquet)?;
    let file = w.into_inner().map_err(parquet)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// Where [`write_transitions`] writes before renaming: beside `path`, ending in `.tmp` (which
/// [`read_paths`] skips).
pub fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn fixed_rows<const N: usize>(a: &dyn Array) -> Vec<[f32; N]> {
    let fl: &FixedSizeListArray = a.as_fixed_size_list();
    let vals = fl.values().as_primitive::<Float32Type>();
    (0..fl.len())
        .map(|i| std::array::from_fn(|j| vals.value(i * N + j)))
        .collect()
}

/// Reads the snapshots of `path`. A file that is not Parquet, or whose columns are not those of
/// stored snapshots, is an error naming the file and what differs.
pub fn read(path: &Path) -> Result<Vec<Snapshot>, StoreError> {
    Ok(read_transitions(path)?
        .into_iter()
        .map(|t| t.snapshot)
        .collect())
}

/// Reads the rows of `path`, with what was recorded beside each snapshot.
pub fn read_transitions(path: &Path) -> Result<Vec<Transition>, StoreError> {
    let p = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| StoreError::Io {
        path: p.clone(),
        source,
    })?;
    let parquet = |e: parquet::errors::ParquetError| StoreError::Parquet {
        path: p.clone(),
        message: e.to_string(),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet)?;
    let expected = snapshot_schema();
    let found = builder.schema().clone();
    for f in expected.fields() {
        match found.field_with_name(f.name()) {
            Ok(g) if g.data_type() == f.data_type() => {}
            Ok(g) => {
                return Err(StoreError::Schema {
                    path: p.clone(),
                    message: format!(
                        "column `{}` is {:?}, expected {:?}",
                        f.name(),
                        g.data_type(),
                        f.data_type()
                    ),
                })
            }
            Err(_) if OPTIONAL_COLUMNS.contains(&f.name().as_str()) => {}
            Err(_) => {
                return Err(StoreError::Schema {
                    path: p.clone(),
                    message: format!("no column `{}`", f.name()),
                })
            }
        }
    }
    let reader = builder.build().map_err(parquet)?;
    let mut out = vec![];
    for batch in reader {
        let b = batch.map_err(|e| StoreError::Parquet {
            path: p.clone(),
            message: e.to_string(),
        })?;
        let col = |name: &str| {
            b.column_by_name(name)
                .cloned()
                .expect("checked against the schema above")
        };
        let version = col("schema_version");
        let version = version.as_primitive::<UInt32Type>();
        let (time, window) = (col("time_s"), col("window_s"));
        let (time, window) = (
            time.as_primitive::<Float64Type>(),
            window.as_primitive::<Float64Type>(),
        );
        let lists: Vec<ArrayRef> = [
            "services",
            "service_x",
            "nodes",
            "node_x",
            "calls_src",
            "calls_dst",
            "runs_on_src",
            "runs_on_dst",
            "hosts_src",
            "hosts_dst",
            "calls_attr",
            "runs_on_pods",
            "hosts_pods",
            "replicas_spec",
            "replicas_ready",
        ]
        .iter()
        .map(|n| col(n))
        .collect();
        let global = col("global");
        let global = fixed_rows::<2>(global.as_ref());
        let requests = b.column_by_name("cpu_request_cores").cloned();
        let limits = b.column_by_name("cpu_limit_cores").cloned();
        let missing = b.column_by_name("service_missing").cloned();
        let global_missing = b.column_by_name("global_missing").cloned();
        let recorded = recorded(&b, &p)?;
        let entry = b.column_by_name("entry").cloned();
        let entry: Vec<Option<[f32; 2]>> = match &entry {
            Some(e) => fixed_rows::<2>(e.as_ref())
                .into_iter()
                .enumerate()
                .map(|(i, v)| e.is_valid(i).then_some(v))
                .collect(),
            None => vec![None; b.num_rows()],
        };
        let entry_rps: Vec<Option<f32>> = match b.column_by_name("entry_rps") {
            Some(r) => r.as_primitive::<Float32Type>().iter().collect(),
            None => vec![None; b.num_rows()],
        };
        for (i, global) in global.into_iter().enumerate().take(b.num_rows()) {
            let l = |k: usize| lists[k].as_list::<i32>().value(i);
            let strings = |k: usize| -> Vec<String> {
                l(k).as_string::<i32>()
                    .iter()
                    .map(|s| s.unwrap_or_default().to_string())
                    .collect()
            };
            let u32s =
                |k: usize| -> Vec<u32> { l(k).as_primitive::<UInt32Type>().values().to_vec() };
            let f32s =
                |k: usize| -> Vec<f32> { l(k).as_primitive::<Float32Type>().values().to_vec() };
            let calls_attr: Vec<Vec<f32>> = fixed_rows::<3>(l(10).as_ref())
                .into_iter()
                .map(|r| r.to_vec())
                .collect();
            let edge = |s: Vec<u32>, d: Vec<u32>, attr: Vec<Vec<f32>>| EdgeSet {
                src: s,
                dst: d,
                attr,
            };
            let (decision, reward) = recorded[i].clone();
            let snapshot = Snapshot {
                schema_version: version.value(i),
                time_s: time.value(i),
                window_s: window.value(i),
                services: strings(0),
                service_x: fixed_rows::<7>(l(1).as_ref()),
                replicas_spec: u32s(13),
                replicas_ready: u32s(14),
                nodes: strings(2),
                node_x: fixed_rows::<3>(l(3).as_ref()),
                calls: edge(u32s(4), u32s(5), calls_attr),
                runs_on: edge(
                    u32s(6),
                    u32s(7),
                    f32s(11).into_iter().map(|x| vec![x]).collect(),
                ),
                hosts: edge(
                    u32s(8),
                    u32s(9),
                    f32s(12).into_iter().map(|x| vec![x]).collect(),
                ),
                global,
                cpu_request_cores: requests.as_ref().map_or_else(Vec::new, |r| {
                    r.as_list::<i32>()
                        .value(i)
                        .as_primitive::<Float32Type>()
                        .values()
                        .to_vec()
                }),
                entry: entry[i],
                entry_rps: entry_rps[i],
                cpu_limit_cores: limits.as_ref().map_or_else(Vec::new, |r| {
                    r.as_list::<i32>()
                        .value(i)
                        .as_primitive::<Float32Type>()
                        .values()
                        .to_vec()
                }),
                service_missing: missing.as_ref().map_or_else(Vec::new, |r| {
                    r.as_list::<i32>()
                        .value(i)
                        .as_boolean()
                        .iter()
                        .map(|x| x.unwrap_or(true))
                        .collect()
                }),
                global_missing: global_missing
                    .as_ref()
                    .is_some_and(|g| g.as_boolean().value(i)),
            };
            out.push(Transition {
                snapshot,
                decision,
                reward,
            });
        }
    }
    Ok(out)
}

type Recorded = (Option<RecordedDecision>, Option<RecordedReward>);

/// The decision and reward columns of `b`, per row (`None` where absent or null).
fn recorded(b: &RecordBatch, p: &str) -> Result<Vec<Recorded>, StoreError> {
    let by = b.column_by_name("decided_by").cloned();
    let decision = b.column_by_name("decision").cloned();
    let reward = b.column_by_name("reward").cloned();
    let terms = b.column_by_name("reward_terms").cloned();
    let terms_rows = terms.as_ref().map(|t| fixed_rows::<4>(t.as_ref()));
    let mut out = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        let decision = match (&by, &decision) {
            (Some(by), Some(d)) if by.is_valid(i) && d.is_valid(i) => {
                let who = by.as_string::<i32>().value(i).to_string();
                let list = d.as_list::<i32>().value(i);
                let mut actions = vec![];
                for json in list.as_string::<i32>().iter().flatten() {
                    actions.push(serde_json::from_str::<Action>(json).map_err(|e| {
                        StoreError::Schema {
                            path: p.to_string(),
                            message: format!(
                                "row {i}: the decision of {who} holds `{json}`, not an action: {e}"
                            ),
                        }
                    })?);
                }
                Some(RecordedDecision { by: who, actions })
            }
            _ => None,
        };
        let reward = match (&reward, &terms_rows) {
            (Some(r), Some(t)) if r.is_valid(i) => Some(RecordedReward {
                value: r.as_primitive::<Float64Type>().value(i),
                terms: t[i],
            }),
            _ => None,
        };
        out.push((decision, reward));
    }
    Ok(out)
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters and `?` for one.
fn matches(pattern: &[char], name: &[char]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some('*'), _) => {
            matches(&pattern[1..], name) || (!name.is_empty() && matches(pattern, &name[1..]))
        }
        (Some('?'), Some(_)) => matches(&pattern[1..], &name[1..]),
        (Some(a), Some(b)) if a == b => matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// The stored files `arg` names: itself if a file; the `.parquet` files in it, by name, if a
/// directory; the files matching it if its last component holds `*` or `?` (`store/part-00*`).
/// Unfinished writes (`.tmp`) are skipped. Naming nothing is an error naming `arg`.
pub fn files_of(arg: &Path) -> Result<Vec<std::path::PathBuf>, StoreError> {
    let p = arg.display().to_string();
    let name = arg
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let (dir, pattern): (std::path::PathBuf, Option<Vec<char>>) = if arg.is_dir() {
        (arg.to_path_buf(), None)
    } else if name.contains(['*', '?']) {
        let dir = arg.parent().filter(|d| !d.as_os_str().is_empty());
        (
            dir.map_or_else(|| ".".into(), Path::to_path_buf),
            Some(name.chars().collect()),
        )
    } else {
        return if arg.is_file() {
            Ok(vec![arg.to_path_buf()])
        } else {
            Err(StoreError::Io {
                path: p,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file or directory",
                ),
            })
        };
    };
    let entries = std::fs::read_dir(&dir).map_err(|source| StoreError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut files = vec![];
    for e in entries {
        let e = e.map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let n = e.file_name().to_string_lossy().to_string();
        let take = match &pattern {
            Some(pat) => matches(pat, &n.chars().collect::<Vec<_>>()),
            None => n.ends_with(".parquet"),
        };
        if take && !n.ends_with(".tmp") && e.path().is_file() {
            files.push(e.path());
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(StoreError::Io {
            path: p,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "names no stored snapshot file (.parquet)",
            ),
        });
    }
    Ok(files)
}

/// The rows of every file `args` name ([`files_of`]), file after file in the order named (a
/// directory's by name: the order its recorder wrote them). A store that runs of the twin were
/// recorded into one after another holds one run after another, each starting again at its
/// first window: [`runs`] splits them. A file named twice is an error naming it, as is a file
/// that does not read.
pub fn read_paths(args: &[std::path::PathBuf]) -> Result<Vec<Transition>, StoreError> {
    let mut rows = vec![];
    let mut seen = std::collections::BTreeSet::new();
    for a in args {
        for f in files_of(a)? {
            let key = std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
            if !seen.insert(key) {
                return Err(StoreError::Schema {
                    path: f.display().to_string(),
                    message: "named twice (its rows would be read twice)".into(),
                });
            }
            rows.extend(read_transitions(&f)?);
        }
    }
    Ok(rows)
}

/// `rows` cut into runs: a new run begins where time does not move forward (a twin run
/// recorded after another starts again at its first window).
pub fn runs(rows: &[Transition]) -> Vec<&[Transition]> {
    let mut out = vec![];
    let mut start = 0;
    for i in 1..rows.len() {
        if rows[i].snapshot.time_s <= rows[i - 1].snapshot.time_s {
            out.push(&rows[start..i]);
            start = i;
        }
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}
