//! Typed reads from the parsed TOML document that record every problem with
//! its place instead of stopping at the first.
//!
//! Why not `serde::Deserialize` straight into the model: serde stops at the
//! first error, and a person fixing a config wants all of them at once. So
//! the document is parsed by `toml_edit` (the parser under the `toml` serde
//! crate), which keeps the span of every key and value, and read here field
//! by field.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml_edit::{Item, TableLike};

use crate::suggest::nearest;
use crate::ConfigError;

/// The longest duration any setting takes (see [`Reader::duration`]).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Byte range in the file.
pub type Span = Range<usize>;

/// A value with the place it came from.
#[derive(Debug, Clone)]
pub struct At<T> {
    pub value: T,
    pub span: Span,
}

/// Collects errors for one file.
pub struct Reader<'a> {
    file: &'a str,
    text: &'a str,
    pub errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Reader<'a> {
        Reader {
            file,
            text,
            errors: Vec::new(),
        }
    }

    /// Records a problem at `span`.
    pub fn error(&mut self, span: &Span, message: impl Into<String>) {
        let (line, column) = line_and_column(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        });
    }

    /// 1-based line and column of `span`'s start.
    pub fn line_of(&self, span: &Span) -> (usize, usize) {
        line_and_column(self.text, span.start)
    }

    /// Reports every key of `table` not in `known`, with the nearest known
    /// key when one is close.
    pub fn check_keys(&mut self, table: &dyn TableLike, known: &[&str], context: &str) {
        for (key, _) in table.iter() {
            if known.contains(&key) {
                continue;
            }
            let span = table.key(key).and_then(|k| k.span()).unwrap_or(0..0);
            let hint = match nearest(key, known) {
                Some(near) => format!("; did you mean `{near}`?"),
                None => format!("; expected one of: {}", known.join(", ")),
            };
            self.error(&span, format!("unknown key `{key}` in {context}{hint}"));
        }
    }

    /// The span of `key`'s value in `table`, else of the key, else `fallback`.
    pub fn span_of(table: &dyn TableLike, key: &str, fallback: &Span) -> Span {
        table
            .get(key)
            .and_then(Item::span)
            .or_else(|| table.key(key).and_then(|k| k.span()))
            .unwrap_or_else(|| fallback.clone())
    }

    fn wrong_type(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        context: &str,
        expected: &str,
        found: &Item,
    ) {
        let span = Reader::span_of(table, key, &(0..0));
        self.error(
            &span,
            format!(
                "`{key}` in {context} must be {expected}, not {}",
                found.type_name()
            ),
        );
    }

    pub fn string(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        context: &str,
    ) -> Option<At<String>> {
        let item = table.get(key)?;
        match item.as_str() {
            Some(s) => Some(At {
                value: s.to_string(),
                span: Reader::span_of(table, key, &(0..0)),
            }),
            None => {
                self.wrong_type(table, key, context, "a string", item);
                None
            }
        }
    }

    /// A string that must be there; `table_span` locates the error when not.
    pub fn required_string(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        context: &str,
        table_span: &Span,
    ) -> Option<At<String>> {
        if table.get(key).is_none() {
            self.error(table_span, format!("{context} needs `{key}`"));
            return None;
        }
        self.string(table, key, context)
    }

    pub fn integer(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        context: &str,
        range: Range<i64>,
    ) -> Option<i64> {
        let item = table.get(key)?;
        let Some(n) = item.as_integer() else {
            self.wrong_type(table, key, context, "an integer", item);
            return None;
        };
        if !range.contains(&n) {
            let span = Reader::span_of(table, key, &(0..0));
            self.error(
                &span,
                format!(
                    "`{key}` in {context} must be from {} to {}, not {n}",
                    range.start,
                    range.end - 1
                ),
            );
            return None;
        }
        Some(n)
    }

    pub fn float(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        context: &str,
        min: f64,
        max: f64,
    ) -> Option<f64> {
        let item = table.get(key)?;
        let value = item
            .as_float()
            .or_else(|| item.as_integer().map(|i| i as f64));
        let Some(x) = value else {
            self.wrong_type(table, key, context, "a number", item);
            return None;
        };
        if !(min..=max).contains(&x) {
            let span = Reader::span_of(table, key, &(0..0));
            self.error(
                &span,
                format!("`{key}` in {context} must be from {min} to {max}, not {x}"),
            );
            return None;
        }
        Some(x)
    }

    pub fn boolean(&mut self, table: &dyn TableLike, key: &str, context: &str) -> Option<bool> {
        let item = table.get(key)?;
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.wrong_type(table, key, context, "true or false", item);
                None
            }
        }
    }

    /// `"500ms"`, `"30s"`, `"5m"`: humantime's format.
    ///
    /// Capped at a year: the control plane adds durations to `Instant`s,
    /// and a sum past what the clock can hold would panic there.
    pub fn duration(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        context: &str,
    ) -> Option<Duration> {
        let text = self.string(table, key, context)?;
        match humantime::parse_duration(&text.value) {
            Ok(d) if d.is_zero() => {
                self.error(
                    &text.span,
                    format!("`{key}` in {context} must be longer than zero"),
                );
                None
            }
            Ok(d) if d > MAX_DURATION => {
                self.error(
                    &text.span,
                    format!(
                        "`{key}` in {context} must be at most a year, not {:?}",
                        text.value
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    &text.span,
                    format!(
                        "`{key}` in {context}: {:?} is not a duration ({e}); expected e.g. \"500ms\", \"30s\", \"5m\"",
                        text.value
                    ),
                );
                None
            }
        }
    }

    /// A list of strings, each with its own span.
    pub fn string_list(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        context: &str,
    ) -> Option<Vec<At<String>>> {
        let item = table.get(key)?;
        let Some(array) = item.as_array() else {
            self.wrong_type(table, key, context, "a list of strings", item);
            return None;
        };
        let mut out = Vec::new();
        for value in array.iter() {
            let span = value.span().unwrap_or(0..0);
            match value.as_str() {
                Some(s) => out.push(At {
                    value: s.to_string(),
                    span,
                }),
                None => self.error(
                    &span,
                    format!(
                        "`{key}` in {context} must list strings, not {}",
                        value.type_name()
                    ),
                ),
            }
        }
        Some(out)
    }

    /// An `IP:port` literal. Names are refused: a proxy that resolves
    /// names at load time silently pins whatever DNS said then.
    pub fn parse_addr(&mut self, text: &At<String>, what: &str) -> Option<SocketAddr> {
        match text.value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    &text.span,
                    format!(
                        "{what} {:?} is not an address; expected IP:port like \"127.0.0.1:3000\" or \"[::1]:3000\" (names are not resolved)",
                        text.value
                    ),
                );
                None
            }
        }
    }

    /// `IP:port` literals, each with its place for checks that compare
    /// addresses across tables.
    pub fn spanned_addr_list(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        context: &str,
    ) -> Option<Vec<At<SocketAddr>>> {
        let list = self.string_list(table, key, context)?;
        let what = format!("`{key}` entry in {context}");
        Some(
            list.iter()
                .filter_map(|s| {
                    self.parse_addr(s, &what).map(|value| At {
                        value,
                        span: s.span.clone(),
                    })
                })
                .collect(),
        )
    }
}

/// 1-based line and column (in characters) of byte `offset`.
pub fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary_compat(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, index: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut index: usize) -> usize {
        while !self.is_char_boundary(index) {
            index -= 1;
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 6), (2, 1));
        assert_eq!(
            line_and_column(text, 10),
            (2, 4),
            "columns count characters"
        );
        assert_eq!(line_and_column(text, 999), (3, 1));
    }
}
