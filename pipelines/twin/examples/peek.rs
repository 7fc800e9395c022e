use graphscaler_twin::*;
fn main() {
    let cfg = TwinConfig::default();
    let topo = Topology::from_file(std::path::Path::new("data/topologies/online-boutique.json"), &cfg.fanout_parameters).unwrap();
    let shape = Shape::parse(&std::env::args().nth(1).unwrap_or("peak".into())).unwrap();
    let mut twin = Twin::new(topo, cfg, SloConfig::default(), shape, 3600.0, 1).unwrap();
    let mut i = 0;
    while !twin.done() {
        let (obs, truth) = twin.advance();
        if i % 20 == 0 {
            println!("t={:5.0} rps={:6.1} p95={:8.1} err={:.3} viol={}", obs.time_s, obs.global.entry_rps, obs.global.entry_p95_ms, obs.global.entry_error_rate, truth.slo_violated);
            for s in &obs.services { print!(" {}:{:.0}ms/{:.2}c/{:.2}e", &s.name[..4], s.p95_ms, s.cpu_usage_cores, s.error_rate); }
            println!();
        }
        i += 1;
    }
}
