//! A registry that declares every family it holds. prometheus-client leaves a family without
//! series out of the exposition; this one still writes its `# HELP` and `# TYPE` lines, so a
//! dashboard, an alert or a test can tell a metric with no data yet from a misspelt one.

use prometheus_client::registry::{Metric, Registry};

/// A [`Registry`] that remembers what it holds.
#[derive(Debug)]
pub struct Declared {
    registry: Registry,
    prefix: String,
    /// Full name, help and type of each family, in registration order.
    families: Vec<(String, String, String)>,
}

impl Declared {
    /// An empty registry whose names all start with `prefix_`.
    pub fn new(prefix: &str) -> Self {
        Self {
            registry: Registry::with_prefix(prefix),
            prefix: prefix.to_owned(),
            families: Vec::new(),
        }
    }

    /// Registers `metric` as `<prefix>_<name>` (counters get `_total` on their series).
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        let kind = metric.metric_type().as_str().to_owned();
        self.families
            .push((format!("{}_{name}", self.prefix), help.to_owned(), kind));
        self.registry.register(name, help, metric);
    }

    /// The OpenMetrics text of every family, with or without series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        let mut missing = String::new();
        for (name, help, kind) in &self.families {
            if !out.contains(&format!("# TYPE {name} {kind}\n")) {
                // The same form prometheus-client writes: the help ends with a full stop.
                missing.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} {kind}\n"));
            }
        }
        let at = out.rfind("# EOF").unwrap_or(out.len());
        out.insert_str(at, &missing);
        out
    }

    /// The full names of the families, as on their `# TYPE` lines.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.families.iter().map(|(n, _, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    use super::*;

    #[test]
    fn a_family_without_series_is_still_declared_before_eof() {
        let mut r = Declared::new("t");
        let used = Family::<Vec<(String, String)>, Counter>::default();
        let unused = Family::<Vec<(String, String)>, Counter>::default();
        r.register("used", "Used", used.clone());
        r.register("unused", "Unused", unused);
        used.get_or_create(&vec![("a".into(), "b".into())]).inc();
        let text = r.encode();
        assert!(text.contains("t_used_total{a=\"b\"} 1\n"), "{text}");
        assert!(
            text.contains("# HELP t_unused Unused.\n# TYPE t_unused counter\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# TYPE t_used counter").count(), 1);
        assert_eq!(r.names().collect::<Vec<_>>(), ["t_used", "t_unused"]);
    }
}
