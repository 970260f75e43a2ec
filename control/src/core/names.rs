//! Backend names in the core: new addresses for slots whose names answered
//! differently, applied like a health change (the routes and their
//! decisions stay; the slots' backends change and a table is published).

use std::collections::BTreeMap;

use switchyard_conf::Config;

use super::{Core, Level, Now};
use crate::names::{NameKey, NameStatus};

impl Core {
    pub(super) fn names_resolved(
        &mut self,
        config: Option<Box<Config>>,
        names: BTreeMap<NameKey, NameStatus>,
        now: Now,
    ) {
        let addresses_changed = names.len() != self.names.len()
            || names
                .iter()
                .any(|(key, n)| self.names.get(key).map(|o| &o.addresses) != Some(&n.addresses));
        self.names = names;
        let Some(resolved) = config else {
            // The first report, at start: the table published before it
            // did not know which name each address came from (what TLS to
            // an https slot checks).
            if addresses_changed {
                self.publish(now);
            }
            return;
        };
        // Only the addresses are taken: everything else of the running
        // config stays as it is.
        let mut changes = Vec::new();
        for route in &mut self.config.routes {
            let Some(new) = resolved.route(&route.name) else {
                continue;
            };
            for (slot, addresses) in &mut route.slots {
                let Some(fresh) = new.slots.get(slot) else {
                    continue;
                };
                if fresh != addresses && !fresh.is_empty() {
                    let shown: Vec<String> = fresh.iter().map(|a| a.to_string()).collect();
                    changes.push((
                        route.name.clone(),
                        format!(
                            "slot {slot:?}: backend names now resolve to {}",
                            shown.join(", ")
                        ),
                    ));
                    *addresses = fresh.clone();
                }
            }
        }
        if changes.is_empty() {
            return;
        }
        for (route, message) in changes {
            self.log(Level::Info, Some(&route), message);
        }
        self.track_backends(now);
        self.publish(now);
    }

    /// What `status` shows of the backend names `route`'s `slot` lists.
    pub(super) fn slot_names(&self, route: &str, slot: &str) -> Vec<NameStatus> {
        let Some(route) = self.config.route(route) else {
            return Vec::new();
        };
        route
            .names()
            .filter(|(s, _)| *s == slot)
            .filter_map(|(_, name)| self.names.get(&name.key()).cloned())
            .collect()
    }
}
