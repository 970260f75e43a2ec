//! What a config edit takes away from the running config.
//!
//! A file caught mid-write is a prefix of the file being written: an empty
//! file, or one cut after some line. Such a prefix never adds anything; when
//! it still parses, it has fewer routes, fewer slots, a section less, or a
//! canary whose `weight` line has not arrived yet (weight 0). Applying it
//! would take traffic away from routes, or make runtime decisions on them
//! (an admin's switch, a canary) disappear. So the Controller applies an
//! edit that [`removals`] finds anything in only after the file has stayed
//! that way much longer than an ordinary edit (see the Controller's
//! `SHRINK_SETTLE`).
//!
//! Pure: two validated configs in, a list out. A deliberate removal looks
//! the same and is applied too, only later.

use std::fmt;

use crate::{Config, RouteConfig};

/// A part of a config that an edit removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// The edited file has no route left (it is empty, or cut before its
    /// first `[[route]]`): every route of the running config, by name.
    EveryRoute(Vec<String>),
    /// This route is gone (or renamed).
    Route(String),
    /// A slot of a route that stays.
    Slot { route: String, slot: String },
    /// An optional section of a route that stays (`route: Some`), or a
    /// top-level one (`route: None`, `[tls]`).
    Section {
        route: Option<String>,
        section: Section,
    },
    /// The route's `[route.canary]` stays on the same slot but its weight
    /// went from above 0 to 0 (the default, as when the `weight` line is
    /// missing): the canary stops.
    CanaryStopped {
        route: String,
        slot: String,
        weight: u8,
    },
}

/// The optional sections whose removal counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Health,
    Canary,
    Preview,
    Rollout,
    Tls,
}

impl Section {
    /// `[route.health]`, `[tls]`.
    pub fn table(self) -> &'static str {
        match self {
            Section::Health => "[route.health]",
            Section::Canary => "[route.canary]",
            Section::Preview => "[route.preview]",
            Section::Rollout => "[route.rollout]",
            Section::Tls => "[tls]",
        }
    }
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Removal::EveryRoute(names) => {
                write!(f, "every route (")?;
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{name}")?;
                }
                write!(f, ")")
            }
            Removal::Route(name) => write!(f, "route {name}"),
            Removal::Slot { route, slot } => write!(f, "slot {slot} of route {route}"),
            Removal::Section {
                route: Some(route),
                section,
            } => write!(f, "{} of route {route}", section.table()),
            Removal::Section {
                route: None,
                section,
            } => write!(f, "{}", section.table()),
            Removal::CanaryStopped {
                route,
                slot,
                weight,
            } => write!(
                f,
                "the canary of route {route} (slot {slot} at weight {weight} becomes weight 0)"
            ),
        }
    }
}

/// Everything `new` removes from `old`, in `old`'s order; empty when the
/// edit only adds or changes things. A removed route is reported alone,
/// not also its slots and sections.
pub fn removals(old: &Config, new: &Config) -> Vec<Removal> {
    let mut found = Vec::new();
    if old.tls.is_some() && new.tls.is_none() {
        found.push(Removal::Section {
            route: None,
            section: Section::Tls,
        });
    }
    if new.routes.is_empty() && !old.routes.is_empty() {
        found.push(Removal::EveryRoute(
            old.routes.iter().map(|r| r.name.clone()).collect(),
        ));
        return found;
    }
    for route in &old.routes {
        match new.route(&route.name) {
            None => found.push(Removal::Route(route.name.clone())),
            Some(edited) => route_removals(route, edited, &mut found),
        }
    }
    found
}

fn route_removals(old: &RouteConfig, new: &RouteConfig, found: &mut Vec<Removal>) {
    for slot in old.slots.keys() {
        if !new.slots.contains_key(slot) {
            found.push(Removal::Slot {
                route: old.name.clone(),
                slot: slot.clone(),
            });
        }
    }
    let sections = [
        (Section::Health, old.health.is_some(), new.health.is_some()),
        (Section::Canary, old.canary.is_some(), new.canary.is_some()),
        (
            Section::Preview,
            old.preview.is_some(),
            new.preview.is_some(),
        ),
        (
            Section::Rollout,
            old.rollout.is_some(),
            new.rollout.is_some(),
        ),
    ];
    for (section, before, after) in sections {
        if before && !after {
            found.push(Removal::Section {
                route: Some(old.name.clone()),
                section,
            });
        }
    }
    if let (Some(before), Some(after)) = (&old.canary, &new.canary) {
        if before.slot == after.slot && before.weight > 0 && after.weight == 0 {
            found.push(Removal::CanaryStopped {
                route: old.name.clone(),
                slot: before.slot.clone(),
                weight: before.weight,
            });
        }
    }
}

/// `route api, slot green of route app`: the removals for one log line.
pub fn describe(removals: &[Removal]) -> String {
    removals
        .iter()
        .map(Removal::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, crate::ConfigErrors> {
        crate::parse("test.toml", text, Path::new("/etc/switchyard"))
    }

    fn config(text: &str) -> Config {
        parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    const SERVER: &str = "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n";

    fn route(name: &str, slots: &[&str], extra: &str) -> String {
        let mut text = format!(
            "[[route]]\nname = \"{name}\"\nhosts = [\"{name}.test\"]\nactive = \"{}\"\n[route.slots]\n",
            slots[0]
        );
        for (i, slot) in slots.iter().enumerate() {
            text.push_str(&format!("{slot} = [\"127.0.0.1:{}\"]\n", 3000 + i));
        }
        text.push_str(extra);
        text
    }

    const CANARY: &str = "[route.canary]\nslot = \"green\"\nweight = 10\n";
    const HEALTH: &str = "[route.health]\npath = \"/health\"\n";

    fn two_routes() -> String {
        format!(
            "{SERVER}{}{}",
            route("app", &["blue", "green"], HEALTH),
            route("api", &["blue", "green"], &format!("{HEALTH}{CANARY}"))
        )
    }

    #[test]
    fn an_unchanged_or_growing_edit_removes_nothing() {
        let old = config(&two_routes());
        assert_eq!(removals(&old, &old), vec![]);
        let grown = config(&format!(
            "{}{}",
            two_routes(),
            route("new", &["a"], "[route.preview]\n")
        ));
        assert_eq!(removals(&old, &grown), vec![]);
        // A changed backend, active slot or weight is an ordinary edit.
        let changed = config(
            &two_routes()
                .replacen("127.0.0.1:3001", "127.0.0.1:4001", 1)
                .replacen("active = \"blue\"", "active = \"green\"", 1)
                .replace("weight = 10", "weight = 50"),
        );
        assert_eq!(removals(&old, &changed), vec![]);
        // So is a slot's backend list getting shorter.
        let more_backends = config(&two_routes().replacen(
            "blue = [\"127.0.0.1:3000\"]",
            "blue = [\"127.0.0.1:3000\", \"127.0.0.1:3999\"]",
            1,
        ));
        assert_eq!(removals(&more_backends, &old), vec![]);
    }

    #[test]
    fn an_empty_file_removes_every_route() {
        let old = config(&two_routes());
        let empty = config("");
        assert_eq!(
            removals(&old, &empty),
            vec![Removal::EveryRoute(vec!["app".into(), "api".into()])]
        );
        assert_eq!(describe(&removals(&old, &empty)), "every route (app, api)");
        // Nothing to remove from an empty config.
        assert_eq!(removals(&empty, &empty), vec![]);
        assert_eq!(removals(&empty, &old), vec![]);
    }

    #[test]
    fn a_removed_route_is_named_alone() {
        let old = config(&two_routes());
        let new = config(&format!(
            "{SERVER}{}",
            route("api", &["blue", "green"], &format!("{HEALTH}{CANARY}"))
        ));
        assert_eq!(removals(&old, &new), vec![Removal::Route("app".into())]);
        assert_eq!(describe(&removals(&old, &new)), "route app");
    }

    #[test]
    fn a_removed_slot_or_section_is_named_with_its_route() {
        let old = config(&two_routes());
        let new = config(&format!(
            "{SERVER}{}{}",
            route("app", &["blue"], HEALTH),
            route("api", &["blue", "green"], "")
        ));
        let found = removals(&old, &new);
        assert_eq!(
            found,
            vec![
                Removal::Slot {
                    route: "app".into(),
                    slot: "green".into()
                },
                Removal::Section {
                    route: Some("api".into()),
                    section: Section::Health
                },
                Removal::Section {
                    route: Some("api".into()),
                    section: Section::Canary
                },
            ]
        );
        assert_eq!(
            describe(&found),
            "slot green of route app, [route.health] of route api, [route.canary] of route api"
        );
    }

    #[test]
    fn a_canary_without_its_weight_line_stops_and_that_counts() {
        let old = config(&two_routes());
        let new = config(&two_routes().replace("weight = 10\n", ""));
        assert_eq!(
            removals(&old, &new),
            vec![Removal::CanaryStopped {
                route: "api".into(),
                slot: "green".into(),
                weight: 10
            }]
        );
        // Lowering the weight, or moving the canary, is an ordinary edit.
        let lower = config(&two_routes().replace("weight = 10", "weight = 1"));
        assert_eq!(removals(&old, &lower), vec![]);
        let at_zero = config(&two_routes().replace("weight = 10", "weight = 0"));
        assert_eq!(removals(&at_zero, &old), vec![]);
    }

    #[test]
    fn removing_tls_counts() {
        let tls = "[tls]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\n\n";
        let old = config(&format!("{tls}{}", two_routes()));
        let new = config(&two_routes());
        assert_eq!(
            removals(&old, &new),
            vec![Removal::Section {
                route: None,
                section: Section::Tls
            }]
        );
        assert_eq!(describe(&removals(&old, &new)), "[tls]");
    }

    /// What decides where a request goes: a prefix that removes nothing
    /// must leave all of it as it was.
    fn traffic(config: &Config) -> Vec<String> {
        config
            .routes
            .iter()
            .map(|r| {
                format!(
                    "{} {:?} {} {} {:?} {:?}",
                    r.name,
                    r.hosts,
                    r.path_prefix,
                    r.active,
                    r.slots,
                    r.canary.as_ref().map(|c| (&c.slot, c.weight))
                )
            })
            .collect()
    }

    /// The editor's failure this module is for: the file cut after any
    /// line. Every prefix that parses is the whole file, or removes
    /// something, or leaves every traffic decision as it was.
    #[test]
    fn every_line_prefix_that_parses_removes_something_or_moves_no_traffic() {
        let examples = [
            include_str!("../tests/design-example.toml").to_string(),
            two_routes(),
        ];
        for whole_text in examples {
            let whole = config(&whole_text);
            let mut shrinking = 0;
            let mut offset = 0;
            for line in whole_text.split_inclusive('\n') {
                let prefix = &whole_text[..offset];
                offset += line.len();
                let Ok(cut) = parse(prefix) else { continue };
                if cut == whole {
                    continue;
                }
                if removals(&whole, &cut).is_empty() {
                    assert_eq!(
                        traffic(&cut),
                        traffic(&whole),
                        "cut before line {line:?} moves traffic without removing anything"
                    );
                } else {
                    shrinking += 1;
                }
            }
            assert!(shrinking > 5, "only {shrinking} shrinking prefixes");
        }
    }
}
