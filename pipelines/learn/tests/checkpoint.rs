//! A checkpoint saves and loads back to identical outputs; a wrong one is refused with the reason.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use graphscaler_learn::checkpoint::{self, Manifest};
use graphscaler_learn::ppo::Agent;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn manifest(topology: &str) -> Manifest {
    Manifest {
        format: 0,
        algo: "ppo".into(),
        encoder: "mlp".into(),
        schema_version: graphscaler_schemas::SCHEMA_VERSION,
        topology: topology.into(),
        config: BTreeMap::from([("hidden".to_string(), serde_json::json!(64))]),
        params: BTreeMap::new(),
        sha256: None,
        produced_by: "tests/checkpoint.rs".into(),
        act: None,
    }
}

#[test]
fn saves_and_loads_back_and_refuses_what_does_not_fit() {
    tch::manual_seed(3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt/agent");
    let vs = VarStore::new(Device::Cpu);
    let agent = Agent::new(&vs.root(), 4, 2, 64);
    let m = checkpoint::save(&path, &vs, manifest("online-boutique")).unwrap();
    assert_eq!(m.params["actor.0.weight"], [64, 4]);
    assert!(path.with_extension("safetensors").is_file() && path.with_extension("json").is_file());

    // A fresh model (other random weights) loads the same numbers and gives the same outputs.
    tch::manual_seed(99);
    let mut vs2 = VarStore::new(Device::Cpu);
    let agent2 = Agent::new(&vs2.root(), 4, 2, 64);
    let x = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
    assert!(
        agent
            .logits(&x)
            .ne_tensor(&agent2.logits(&x))
            .any()
            .int64_value(&[])
            == 1
    );
    checkpoint::load(&path, &mut vs2, "online-boutique").unwrap();
    assert!(agent.logits(&x).equal(&agent2.logits(&x)));
    assert!(agent.value(&x).equal(&agent2.value(&x)));

    // Another topology.
    let e = checkpoint::load(&path, &mut vs2, "synthetic-1000")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trained on topology `online-boutique`, not `synthetic-1000`"),
        "{e}"
    );
    // Other shapes.
    let mut vs3 = VarStore::new(Device::Cpu);
    let _ = Agent::new(&vs3.root(), 4, 2, 32);
    let e = checkpoint::load(&path, &mut vs3, "online-boutique")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("parameter `actor.0.bias` has shape [64], the model's is [32]"),
        "{e}"
    );
    // A missing file.
    let e = checkpoint::load(&dir.path().join("nope"), &mut vs2, "*")
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.json") && e.contains("No such file"), "{e}");
    // A manifest of another feature schema, and one that is not JSON.
    let json = path.with_extension("json");
    let text = std::fs::read_to_string(&json).unwrap();
    std::fs::write(
        &json,
        text.replace(
            &format!(
                "\"schema_version\": {}",
                graphscaler_schemas::SCHEMA_VERSION
            ),
            "\"schema_version\": 0",
        ),
    )
    .unwrap();
    let e = checkpoint::load(&path, &mut vs2, "*")
        .unwrap_err()
        .to_string();
    assert!(e.contains("feature schema v0"), "{e}");
    // The act rule chosen on validation: `mode` or `sample`, nothing else; absent: none named.
    std::fs::write(
        &json,
        text.replace("\"format\"", "\"act\": \"sample\",\n  \"format\""),
    )
    .unwrap();
    assert_eq!(
        checkpoint::manifest(&path).unwrap().act.as_deref(),
        Some("sample")
    );
    std::fs::write(
        &json,
        text.replace("\"format\"", "\"act\": \"greedy\",\n  \"format\""),
    )
    .unwrap();
    let e = checkpoint::manifest(&path).unwrap_err().to_string();
    assert!(
        e.contains("agent.json")
            && e.contains("act must be \"mode\" or \"sample\", got \"greedy\""),
        "{e}"
    );
    std::fs::write(&json, &text).unwrap();
    assert_eq!(checkpoint::manifest(&path).unwrap().act, None);
    std::fs::write(&json, "{ not json").unwrap();
    let e = checkpoint::load(&path, &mut vs2, "*")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("agent.json") && e.contains("key must be a string"),
        "{e}"
    );
    // Weights gone, manifest fine.
    std::fs::write(&json, text).unwrap();
    std::fs::remove_file(path.with_extension("safetensors")).unwrap();
    let e = checkpoint::load(&path, &mut vs2, "*")
        .unwrap_err()
        .to_string();
    assert!(e.contains("agent.safetensors: no such file"), "{e}");
}

#[test]
fn a_dot_in_the_name_is_part_of_the_name() {
    use std::path::Path;
    assert_eq!(
        checkpoint::file(Path::new("runs/m0.2"), "json"),
        Path::new("runs/m0.2.json")
    );
    assert_eq!(
        checkpoint::file(Path::new("runs/gat-ppo.safetensors"), "csv"),
        Path::new("runs/gat-ppo.csv")
    );
    // Two checkpoints whose names differ after a dot do not overwrite each other.
    let dir = tempfile::tempdir().unwrap();
    for name in ["m0.2", "m0.35"] {
        let vs = VarStore::new(Device::Cpu);
        let _agent = Agent::new(&vs.root(), 4, 2, 8);
        checkpoint::save(&dir.path().join(name), &vs, manifest("*")).unwrap();
    }
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "m0.2.json",
            "m0.2.safetensors",
            "m0.35.json",
            "m0.35.safetensors"
        ]
    );
    let mut vs = VarStore::new(Device::Cpu);
    let _agent = Agent::new(&vs.root(), 4, 2, 8);
    checkpoint::load(&dir.path().join("m0.35"), &mut vs, "*").unwrap();
}

#[test]
fn damaged_or_non_finite_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent");
    let vs = VarStore::new(Device::Cpu);
    let _agent = Agent::new(&vs.root(), 4, 2, 16);
    let m = checkpoint::save(&path, &vs, manifest("*")).unwrap();
    let sha = m.sha256.clone().unwrap();
    assert_eq!(sha.len(), 64, "{sha}");
    assert_eq!(
        sha,
        checkpoint::sha256_of(&path.with_extension("safetensors")).unwrap()
    );
    // Written whole: no temporary file is left beside the checkpoint.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["agent.json", "agent.safetensors"]);
    let mut vs2 = VarStore::new(Device::Cpu);
    let _agent2 = Agent::new(&vs2.root(), 4, 2, 16);
    checkpoint::load(&path, &mut vs2, "*").unwrap();

    // One bit flipped in the last weight: the checksum no longer matches.
    let weights = path.with_extension("safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&weights, &bytes).unwrap();
    let e = checkpoint::load(&path, &mut vs2, "*")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("SHA-256") && e.contains("changed or damaged"),
        "{e}"
    );

    // All-NaN weights, saved with a checksum that matches them: refused by the finite check.
    let vs3 = VarStore::new(Device::Cpu);
    let _agent3 = Agent::new(&vs3.root(), 4, 2, 16);
    tch::no_grad(|| {
        let mut w = vs3.variables()["actor.0.weight"].shallow_clone();
        let _ = w.fill_(f64::NAN);
    });
    checkpoint::save(&path, &vs3, manifest("*")).unwrap();
    let e = checkpoint::load(&path, &mut vs2, "*")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("parameter `actor.0.weight` holds a NaN or an infinite weight"),
        "{e}"
    );

    // A manifest from before checksums (no sha256) still loads good weights, with a warning.
    checkpoint::save(&path, &vs, manifest("*")).unwrap();
    let json = path.with_extension("json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("sha256");
    std::fs::write(&json, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    checkpoint::load(&path, &mut vs2, "*").unwrap();
}
