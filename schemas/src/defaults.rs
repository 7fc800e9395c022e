//! The one place a default is written: `config/default.toml`, compiled in. Every settings type's
//! `Default` reads its section from here, and the application layers the user's file and the
//! environment over the same text, so a default cannot disagree with itself.
//!
//! ```
//! let window: f64 = graphscaler_schemas::defaults::section("pipeline.window_s");
//! assert!(window > 0.0);
//! ```

use std::sync::OnceLock;

use serde::de::DeserializeOwned;

/// The embedded default configuration file (all sections).
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

fn parsed() -> &'static toml::Table {
    static TABLE: OnceLock<toml::Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        DEFAULT_TOML
            .parse()
            .expect("config/default.toml is valid TOML (checked by a test)")
    })
}

/// The value at the dotted `path` (`pipeline.guardrails`, `slo.latency_ms`) of the embedded
/// defaults, as `T`, or why it cannot be read.
pub fn try_section<T: DeserializeOwned>(path: &str) -> Result<T, String> {
    let mut v: Option<&toml::Value> = None;
    let mut table = parsed();
    for (i, key) in path.split('.').enumerate() {
        let next = table
            .get(key)
            .ok_or_else(|| format!("config/default.toml has no `{path}`"))?;
        v = Some(next);
        if let toml::Value::Table(t) = next {
            table = t;
        } else if i + 1 < path.split('.').count() {
            return Err(format!(
                "config/default.toml: `{key}` in `{path}` is not a table"
            ));
        }
    }
    let v = v.ok_or_else(|| "an empty path".to_string())?;
    v.clone()
        .try_into()
        .map_err(|e| format!("config/default.toml `{path}`: {e}"))
}

/// [`try_section`] for a section the tests hold to be readable: every settings type's `Default`.
pub fn section<T: DeserializeOwned>(path: &str) -> T {
    try_section(path).unwrap_or_else(|e| panic!("{e} (a test checks every section is readable)"))
}

/// `impl Default for TYPE` as the section at `PATH` of the embedded defaults:
/// `graphscaler_schemas::default_from!(Guardrails, "pipeline.guardrails");`.
#[macro_export]
macro_rules! default_from {
    ($t:ty, $path:literal) => {
        impl Default for $t {
            fn default() -> Self {
                $crate::defaults::section($path)
            }
        }
    };
}

/// The longest duration any setting or argument may name, seconds (a year): past it, a value is
/// a mistake (`1e300`), and a `Duration` or an allocation made from it would fail.
pub const MAX_DURATION_S: f64 = 366.0 * 86_400.0;

/// Whether `x` is a duration a setting may hold: finite, positive and at most
/// [`MAX_DURATION_S`].
pub fn is_duration(x: f64) -> bool {
    x.is_finite() && x > 0.0 && x <= MAX_DURATION_S
}

/// Whether `x` is a duration that may also be 0 (a grace, a cooldown).
pub fn is_duration_or_zero(x: f64) -> bool {
    x == 0.0 || is_duration(x)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sections_and_scalars_read_and_bad_paths_say_why() {
        let w: f64 = super::section("pipeline.window_s");
        assert!(w > 0.0);
        let e = super::try_section::<f64>("pipeline.nope").unwrap_err();
        assert!(e.contains("`pipeline.nope`"), "{e}");
        let e = super::try_section::<f64>("pipeline.window_s.x").unwrap_err();
        assert!(
            e.contains("no `pipeline.window_s.x`") || e.contains("not a table"),
            "{e}"
        );
    }
}
