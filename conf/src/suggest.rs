//! "Did you mean ...?" for unknown keys: the nearest known key by edit
//! distance, when it is near enough to be a typo.

/// The known key closest to `unknown`, if it is a plausible typo of it.
pub fn nearest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let unknown = unknown.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&unknown, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_key_and_nonsense_finds_none() {
        let keys = ["active", "name", "hosts", "path_prefix", "slots"];
        assert_eq!(nearest("activ", &keys), Some("active"));
        assert_eq!(nearest("Host", &keys), Some("hosts"));
        assert_eq!(nearest("path-prefix", &keys), Some("path_prefix"));
        assert_eq!(nearest("zzzzzzzz", &keys), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
