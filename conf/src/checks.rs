//! Checks across routes: unique names, and no two routes that would claim
//! the same requests (a shared host, or both any-host, with the same path
//! prefix).

use std::collections::HashMap;

use crate::reader::Reader;
use crate::schema::ReadRoute;
use crate::HostPattern;

pub fn check_routes(reader: &mut Reader, routes: &[ReadRoute]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        let name = route.config.name.as_str();
        if let Some(&first) = names.get(name) {
            let (line, _) = reader.line_of(&routes[first].name_span);
            reader.error(&route.name_span, format!("route name {name:?} is used twice (first at line {line}); names must be unique"));
        } else {
            names.insert(name, i);
        }
    }
    for (i, later) in routes.iter().enumerate() {
        for earlier in &routes[..i] {
            if earlier.config.name == later.config.name
                || earlier.config.path_prefix != later.config.path_prefix
            {
                continue;
            }
            if let Some(shared) = shared_host(&earlier.config.hosts, &later.config.hosts) {
                reader.error(
                    &later.name_span,
                    format!(
                        "route {:?} claims the same requests as route {:?}: {shared} with path_prefix {:?}; change the hosts or the prefix",
                        later.config.name, earlier.config.name, later.config.path_prefix
                    ),
                );
            }
        }
    }
}

/// What two host lists have in common, as words for the error.
fn shared_host(a: &[HostPattern], b: &[HostPattern]) -> Option<String> {
    if a.is_empty() && b.is_empty() {
        return Some("both match any host".to_string());
    }
    a.iter().find(|h| b.contains(h)).map(|h| match h {
        HostPattern::Exact(name) => format!("host {name:?}"),
        HostPattern::Suffix(suffix) => format!("host \"*{suffix}\""),
    })
}
