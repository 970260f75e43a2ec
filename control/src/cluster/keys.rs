//! Where a cluster's data lives under its `prefix` (see
//! `docs/cluster.md`). Pure: names in, names out.

/// The keys of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The prefix without a trailing `/` (`""` for a prefix of `/`).
    base: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            base: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Every route's decision is under this.
    pub fn routes(&self) -> String {
        format!("{}/routes/", self.base)
    }

    /// One route's decision.
    pub fn route(&self, name: &str) -> String {
        format!("{}{name}", self.routes())
    }

    /// The route a decision's key names; `None` for any other key.
    pub fn route_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.base)?
            .strip_prefix("/routes/")
            .filter(|name| !name.is_empty())
    }

    /// Every node's report is under this.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.base)
    }

    /// One node's report.
    pub fn node(&self, name: &str) -> String {
        format!("{}{name}", self.nodes())
    }

    /// Every route's history is under this.
    pub fn history(&self) -> String {
        format!("{}/history/", self.base)
    }

    /// One route's history: its entries sort by key in time order.
    pub fn route_history(&self, route: &str) -> String {
        format!("{}{route}/", self.history())
    }

    /// One history entry: the time in nanoseconds since the epoch, zero
    /// padded so keys sort as times, then the node (two nodes' entries in
    /// the same nanosecond do not collide).
    pub fn history_entry(&self, route: &str, unix_nanos: u128, node: &str) -> String {
        format!("{}{unix_nanos:020}-{node}", self.route_history(route))
    }

    /// Held by the node that takes the automatic decisions.
    pub fn leader(&self) -> String {
        format!("{}/leader", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sit_under_the_prefix_and_name_their_route() {
        let keys = Keys::new("/switchyard/prod");
        assert_eq!(keys.route("app"), "/switchyard/prod/routes/app");
        assert_eq!(keys.route_of("/switchyard/prod/routes/app"), Some("app"));
        assert_eq!(keys.route_of("/switchyard/prod/routes/"), None);
        assert_eq!(keys.route_of("/switchyard/prod/nodes/a"), None);
        assert_eq!(keys.route_of("/switchyard/prodx/routes/app"), None);
        assert_eq!(keys.leader(), "/switchyard/prod/leader");
        let root = Keys::new("/");
        assert_eq!(root.route("app"), "/routes/app");
        assert_eq!(root.route_of("/routes/app"), Some("app"));
        assert_eq!(root.node("n1"), "/nodes/n1");
        assert_eq!(
            keys.history_entry("app", 1_700_000_000_000_000_000, "n1"),
            "/switchyard/prod/history/app/01700000000000000000-n1"
        );
        assert!(
            keys.history_entry("app", 999, "n") < keys.history_entry("app", 1_000, "n"),
            "keys sort as times"
        );
        assert_eq!(keys.route_of(&keys.history_entry("app", 1, "n")), None);
    }
}
