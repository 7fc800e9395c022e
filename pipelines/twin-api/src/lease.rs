//! `coordination.k8s.io/v1` Leases, as the API server keeps them for leader election: get,
//! create (409 `AlreadyExists` when the name is taken) and replace, which is refused with 409
//! `Conflict` unless the request carries the object's current `metadata.resourceVersion` —
//! the optimistic concurrency two candidates rely on so that only one of them takes a lease.
//! The API server does not interpret the spec (holder, renew time, duration): the candidates
//! do, and so does the twin.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::kube::status;

/// Why a lease request fails: the HTTP status and the Kubernetes `Status` body.
pub type Refusal = (u16, Value);

/// The leases of every namespace, with their resource versions.
#[derive(Debug, Default, Clone)]
pub struct Leases {
    by_name: BTreeMap<(String, String), Value>,
    version: u64,
}

fn not_found(ns: &str, name: &str) -> Refusal {
    (
        404,
        status(
            404,
            "NotFound",
            &format!("leases.coordination.k8s.io \"{name}\" not found in namespace `{ns}`"),
        ),
    )
}

fn invalid(message: String) -> Refusal {
    (422, status(422, "Invalid", &message))
}

/// The name in `body`'s metadata, or `path`'s; a body naming another object than the path is
/// refused, as the API server refuses it.
fn checked_name(body: &Value, path: Option<&str>) -> Result<String, Refusal> {
    if !body.is_object() {
        return Err(invalid("a Lease must be a JSON object".into()));
    }
    if let Some(k) = body.get("kind").and_then(Value::as_str) {
        if k != "Lease" {
            return Err(invalid(format!("kind `{k}` is not a Lease")));
        }
    }
    let named = body.pointer("/metadata/name").and_then(Value::as_str);
    match (named, path) {
        (Some(n), Some(p)) if n != p => Err(invalid(format!(
            "metadata.name `{n}` does not match the name in the path, `{p}`"
        ))),
        (Some(n), _) if !n.is_empty() => Ok(n.to_string()),
        (_, Some(p)) => Ok(p.to_string()),
        _ => Err(invalid("metadata.name: a Lease needs a name".into())),
    }
}

impl Leases {
    /// The lease `name` of `ns`.
    pub fn get(&self, ns: &str, name: &str) -> Result<Value, Refusal> {
        self.by_name
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| not_found(ns, name))
    }

    fn stored(&mut self, ns: &str, name: &str, mut body: Value, created: Option<Value>) -> Value {
        self.version += 1;
        body["apiVersion"] = json!("coordination.k8s.io/v1");
        body["kind"] = json!("Lease");
        let meta = &mut body["metadata"];
        if !meta.is_object() {
            *meta = json!({});
        }
        meta["name"] = json!(name);
        meta["namespace"] = json!(ns);
        meta["resourceVersion"] = json!(self.version.to_string());
        meta["uid"] = created
            .as_ref()
            .and_then(|c| c.pointer("/metadata/uid").cloned())
            .unwrap_or_else(|| json!(format!("lease-{ns}-{name}")));
        self.by_name
            .insert((ns.to_string(), name.to_string()), body.clone());
        body
    }

    /// Creates a lease from `body` (`POST …/namespaces/{ns}/leases`).
    pub fn create(&mut self, ns: &str, body: Value) -> Result<Value, Refusal> {
        let name = checked_name(&body, None)?;
        if self.by_name.contains_key(&(ns.to_string(), name.clone())) {
            return Err((
                409,
                status(
                    409,
                    "AlreadyExists",
                    &format!("leases.coordination.k8s.io \"{name}\" already exists"),
                ),
            ));
        }
        Ok(self.stored(ns, &name, body, None))
    }

    /// Replaces lease `name` with `body` (`PUT …/leases/{name}`), which must carry the current
    /// `metadata.resourceVersion`.
    pub fn replace(&mut self, ns: &str, name: &str, body: Value) -> Result<Value, Refusal> {
        checked_name(&body, Some(name))?;
        let current = self.get(ns, name)?;
        let have = current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        let sent = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        match sent {
            None | Some("") => {
                return Err(invalid(
                    "metadata.resourceVersion must be specified for an update".into(),
                ))
            }
            Some(v) if Some(v) != have => {
                return Err((
                    409,
                    status(
                        409,
                        "Conflict",
                        &format!(
                            "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                        ),
                    ),
                ))
            }
            Some(_) => {}
        }
        Ok(self.stored(ns, name, body, Some(current)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str, holder: &str, rv: Option<&str>) -> Value {
        let mut v = json!({"metadata": {"name": name}, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}});
        if let Some(rv) = rv {
            v["metadata"]["resourceVersion"] = json!(rv);
        }
        v
    }

    #[test]
    fn a_lease_is_taken_by_one_writer_at_a_time() {
        let mut l = Leases::default();
        assert_eq!(l.get("gs", "actuator").unwrap_err().0, 404);
        let a = l.create("gs", lease("actuator", "a", None)).unwrap();
        assert_eq!(a["metadata"]["namespace"], "gs");
        assert_eq!(
            l.create("gs", lease("actuator", "b", None)).unwrap_err().0,
            409
        );
        let rv = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        // Two candidates read the same version; the first replace wins, the second conflicts.
        let b = l
            .replace("gs", "actuator", lease("actuator", "b", Some(&rv)))
            .unwrap();
        let (code, why) = l
            .replace("gs", "actuator", lease("actuator", "c", Some(&rv)))
            .unwrap_err();
        assert_eq!(code, 409);
        assert_eq!(why["reason"], "Conflict");
        assert_eq!(
            l.get("gs", "actuator").unwrap()["spec"]["holderIdentity"],
            "b"
        );
        assert_eq!(b["metadata"]["uid"], a["metadata"]["uid"]);
        // No version, another name, another kind: refused, saying what is wrong.
        assert_eq!(
            l.replace("gs", "actuator", lease("actuator", "c", None))
                .unwrap_err()
                .0,
            422
        );
        let e = l
            .replace("gs", "actuator", lease("other", "c", Some("9")))
            .unwrap_err();
        assert!(
            e.1["message"].as_str().unwrap().contains("does not match"),
            "{e:?}"
        );
        let e = l
            .create("gs", json!({"kind": "Pod", "metadata": {"name": "x"}}))
            .unwrap_err();
        assert_eq!(e.0, 422);
        // Namespaces are apart.
        assert_eq!(l.get("other", "actuator").unwrap_err().0, 404);
    }
}
