//! `error_pages`: the HTML switchyard answers with instead of its own short
//! text, read from files when the config is loaded (a missing or unreadable
//! file is a config error, so a bad page never reaches a client).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use toml_edit::TableLike;

use crate::reader::Reader;

/// The largest page switchyard keeps in memory.
const MAX_PAGE_BYTES: u64 = 1024 * 1024;

/// `error_pages = { 502 = "502.html", ... }` of `t`, each status one of
/// `statuses`; paths relative to `base_dir`.
pub(crate) fn read_error_pages(
    reader: &mut Reader,
    t: &dyn TableLike,
    cx: &str,
    base_dir: &Path,
    statuses: &[u16],
) -> BTreeMap<u16, Arc<[u8]>> {
    let mut pages = BTreeMap::new();
    let Some(item) = t.get("error_pages") else {
        return pages;
    };
    let span = Reader::span_of(t, "error_pages", &(0..0));
    let Some(table) = item.as_table_like() else {
        reader.error(
            &span,
            format!("`error_pages` of {cx} must be a table like {{ 502 = \"pages/502.html\" }}"),
        );
        return pages;
    };
    let allowed: Vec<String> = statuses.iter().map(u16::to_string).collect();
    for (key, value) in table.iter() {
        let Some(status) = statuses.iter().copied().find(|s| s.to_string() == key) else {
            reader.error(&span, format!("`error_pages` of {cx} has {key:?}; the pages switchyard answers with here are {}", allowed.join(", ")));
            continue;
        };
        let Some(file) = value.as_str() else {
            reader.error(
                &span,
                format!("`error_pages.{key}` of {cx} must be a file name"),
            );
            continue;
        };
        let path = if Path::new(file).is_absolute() {
            Path::new(file).to_path_buf()
        } else {
            base_dir.join(file)
        };
        let read = std::fs::metadata(&path).and_then(|m| {
            if m.len() > MAX_PAGE_BYTES {
                Err(std::io::Error::other(format!(
                    "it has {} bytes, more than 1 MiB",
                    m.len()
                )))
            } else {
                std::fs::read(&path)
            }
        });
        match read {
            Ok(page) => {
                pages.insert(status, Arc::from(page));
            }
            Err(e) => reader.error(
                &span,
                format!(
                    "`error_pages.{key}` of {cx}: cannot read {}: {e}",
                    path.display()
                ),
            ),
        }
    }
    pages
}
