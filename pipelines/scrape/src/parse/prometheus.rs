//! The Prometheus HTTP API: `/api/v1/query` (vector, scalar) and `/api/v1/query_range` (matrix).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{ParseError, Parsed};

const TARGET: &str = "prometheus query";

/// One sample of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels (`__name__` included when present).
    pub labels: BTreeMap<String, String>,
    /// Unix time, seconds.
    pub time_s: f64,
    /// The value; always finite (NaN and ±Inf are rejected).
    pub value: f64,
}

impl Sample {
    /// A label's value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

fn point(v: &Value, path: &str) -> Result<(f64, Result<f64, String>), ParseError> {
    let arr = v
        .as_array()
        .filter(|a| a.len() == 2)
        .ok_or_else(|| ParseError::field(TARGET, path, "expected [time, \"value\"]"))?;
    let t = arr[0]
        .as_f64()
        .ok_or_else(|| ParseError::field(TARGET, format!("{path}[0]"), "expected a number"))?;
    let s = arr[1]
        .as_str()
        .ok_or_else(|| ParseError::field(TARGET, format!("{path}[1]"), "expected a string"))?;
    let value = match s.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(x) => Err(format!("non-finite value {x}")),
        Err(_) => Err(format!("value `{s}` is not a number")),
    };
    Ok((t, value))
}

fn labels(v: &Value, path: &str) -> Result<BTreeMap<String, String>, ParseError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ParseError::field(TARGET, path, "expected an object"))?;
    obj.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .ok_or_else(|| {
                    ParseError::field(TARGET, format!("{path}.{k}"), "expected a string")
                })
        })
        .collect()
}

/// Parses a query or range-query response into samples. An `error` status is an error naming
/// Prometheus' error type; NaN and ±Inf samples are rejected one by one (a rate over a counter
/// that has one point is NaN in PromQL, and no action may be taken on it).
pub fn parse(body: &[u8]) -> Result<Parsed<Sample>, ParseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ParseError::json(TARGET, e))?;
    match v.get("status").and_then(Value::as_str) {
        Some("success") => {}
        Some("error") => {
            return Err(ParseError::Remote {
                target: TARGET,
                error_type: v["errorType"].as_str().unwrap_or("error").into(),
                message: v["error"].as_str().unwrap_or_default().into(),
            })
        }
        _ => {
            return Err(ParseError::field(
                TARGET,
                "status",
                "expected \"success\" or \"error\"",
            ))
        }
    }
    let data = v
        .get("data")
        .ok_or_else(|| ParseError::field(TARGET, "data", "missing"))?;
    let kind = data["resultType"]
        .as_str()
        .ok_or_else(|| ParseError::field(TARGET, "data.resultType", "missing"))?;
    let result = &data["result"];
    let mut out = Parsed::default();
    let mut push = |labels: BTreeMap<String, String>,
                    (t, value): (f64, Result<f64, String>),
                    path: String| match value {
        Ok(value) => out.items.push(Sample {
            labels,
            time_s: t,
            value,
        }),
        Err(why) => out.rejected.push(format!("{path}: {why}")),
    };
    match kind {
        "vector" => {
            let arr = result
                .as_array()
                .ok_or_else(|| ParseError::field(TARGET, "data.result", "expected a list"))?;
            for (i, s) in arr.iter().enumerate() {
                let l = labels(&s["metric"], &format!("data.result[{i}].metric"))?;
                let p = point(&s["value"], &format!("data.result[{i}].value"))?;
                push(l, p, format!("data.result[{i}]"));
            }
        }
        "matrix" => {
            let arr = result
                .as_array()
                .ok_or_else(|| ParseError::field(TARGET, "data.result", "expected a list"))?;
            for (i, s) in arr.iter().enumerate() {
                let l = labels(&s["metric"], &format!("data.result[{i}].metric"))?;
                let values = s["values"].as_array().ok_or_else(|| {
                    ParseError::field(
                        TARGET,
                        format!("data.result[{i}].values"),
                        "expected a list",
                    )
                })?;
                for (j, p) in values.iter().enumerate() {
                    let p = point(p, &format!("data.result[{i}].values[{j}]"))?;
                    push(l.clone(), p, format!("data.result[{i}].values[{j}]"));
                }
            }
        }
        "scalar" => {
            let p = point(result, "data.result")?;
            push(BTreeMap::new(), p, "data.result".into());
        }
        other => {
            return Err(ParseError::field(
                TARGET,
                "data.resultType",
                format!("unsupported result type `{other}`"),
            ))
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_query_responses() {
        let p = parse(&crate::fixture("prometheus/api_v1_query_up.json")).unwrap();
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.items[0].label("job"), Some("prometheus"));
        assert_eq!((p.items[0].time_s, p.items[0].value), (1435781451.781, 1.0));
        assert_eq!(p.items[1].value, 0.0);
        let p = parse(&crate::fixture("prometheus/api_v1_query_range_up.json")).unwrap();
        assert_eq!(p.items.len(), 6);
        assert!(p.items.iter().all(|s| s.label("__name__") == Some("up")));
        assert!(p.rejected.is_empty());
    }

    #[test]
    fn nan_and_inf_are_rejected_and_errors_named() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1,"NaN"]},{"metric":{"pod":"b"},"value":[1,"+Inf"]},
            {"metric":{"pod":"c"},"value":[1,"0.25"]}]}}"#;
        let p = parse(body).unwrap();
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.items[0].label("pod"), Some("c"));
        assert_eq!(p.rejected.len(), 2);
        assert!(
            p.rejected[0].contains("data.result[0]") && p.rejected[0].contains("NaN"),
            "{:?}",
            p.rejected
        );
        let e =
            parse(br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#)
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            "prometheus query: the server reported bad_data: parse error at char 5"
        );
        let e = parse(br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1]}]}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.result[0].value"), "{e}");
        assert!(parse(b"{\"status\":")
            .unwrap_err()
            .to_string()
            .contains("malformed JSON"));
        // An empty result is not an error: no samples.
        let p =
            parse(br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#).unwrap();
        assert!(p.items.is_empty() && p.rejected.is_empty());
    }
}
