//! Snapshots in Parquet files, with the Arrow schema of `graphscaler_schemas::arrow`.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, FixedSizeListBuilder, Float32Builder, ListBuilder, StringBuilder, UInt32Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, UInt32Type};
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float64Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field};
use graphscaler_schemas::arrow::{snapshot_schema, OPTIONAL_COLUMNS};
use graphscaler_schemas::{EdgeSet, Snapshot};
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

/// Writes `snapshots` to `path` (one row each).
pub fn write(path: &Path, snapshots: &[Snapshot]) -> Result<(), StoreError> {
    let p = path.display().to_string();
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
    for s in snapshots {
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
    let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| StoreError::Schema {
        path: p.clone(),
        message: e.to_string(),
    })?;
    let file = std::fs::File::create(path).map_err(|source| StoreError::Io {
        path: p.clone(),
        source,
    })?;
    let parquet = |e: parquet::errors::ParquetError| StoreError::Parquet {
        path: p.clone(),
        message: e.to_string(),
    };
    let mut w = ArrowWriter::try_new(file, schema, None).map_err(parquet)?;
    w.write(&batch).map_err(parquet)?;
    w.close().map_err(parquet)?;
    Ok(())
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
        let entry = b.column_by_name("entry").cloned();
        let entry: Vec<Option<[f32; 2]>> = match &entry {
            Some(e) => fixed_rows::<2>(e.as_ref())
                .into_iter()
                .enumerate()
                .map(|(i, v)| e.is_valid(i).then_some(v))
                .collect(),
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
            out.push(Snapshot {
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
            });
        }
    }
    Ok(out)
}
