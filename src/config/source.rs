//! Where a config file is, and where inside it a key stands.
//!
//! Finding the file follows a fixed search order so that a deployed Pi and a
//! laptop behave the same; mapping keys to lines lets every validation error
//! point at the line a person has to edit. This module knows TOML text, not
//! what any key means.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::TableLike;

/// The environment variable that names a config file when `--config` is absent.
pub(crate) const CONFIG_ENV: &str = "PINPOST_CONFIG";

/// The system-wide config file used by the systemd unit.
pub(crate) const SYSTEM_CONFIG: &str = "/etc/pinpost/config.toml";

/// How a config file was chosen, so errors can say why pinpost read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chosen {
    Flag(PathBuf),
    Env(PathBuf),
    Found(PathBuf),
}

impl Chosen {
    pub(crate) fn path(&self) -> &Path {
        match self {
            Chosen::Flag(p) | Chosen::Env(p) | Chosen::Found(p) => p,
        }
    }
}

/// The places searched, in order, when neither `--config` nor the environment
/// variable names a file.
pub(crate) fn search_path() -> Vec<PathBuf> {
    let mut places = vec![PathBuf::from(SYSTEM_CONFIG)];
    if let Some(dirs) = directories::ProjectDirs::from("", "", "pinpost") {
        places.push(dirs.config_dir().join("config.toml"));
    }
    places
}

/// Picks the config file: `--config`, then `$PINPOST_CONFIG`, then the first
/// of [`search_path`] that exists. `None` when nothing names or holds one.
pub(crate) fn choose(flag: Option<&Path>, env: Option<&std::ffi::OsStr>) -> Option<Chosen> {
    if let Some(path) = flag {
        return Some(Chosen::Flag(path.to_path_buf()));
    }
    if let Some(path) = env.filter(|v| !v.is_empty()) {
        return Some(Chosen::Env(PathBuf::from(path)));
    }
    search_path()
        .into_iter()
        .find(|p| p.is_file())
        .map(Chosen::Found)
}

/// One step of a path into the TOML tree: a table key or an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The text of a config file with its parsed layout, for turning key paths
/// into line numbers and byte offsets into key paths.
pub(crate) struct Layout<'t> {
    text: &'t str,
    doc: Option<toml_edit::ImDocument<&'t str>>,
}

impl<'t> Layout<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Layout {
            text,
            doc: toml_edit::ImDocument::parse(text).ok(),
        }
    }

    /// 1-based line of a byte offset.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// The line where `path` is set (the key itself), or where the nearest
    /// table that holds it starts when the key is absent.
    pub(crate) fn line_of_path(&self, path: &[Step<'_>]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let span = span_of(doc.as_table(), path, None)?;
        Some(self.line_of(span.start))
    }

    /// The dotted key whose value or name covers `offset`, for errors that
    /// come with a byte span but no key (serde type errors).
    pub(crate) fn key_at(&self, offset: usize) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut found = None;
        walk(doc.as_table(), &mut Vec::new(), offset, &mut found);
        found
    }
}

type Span = Range<usize>;

fn span_of(table: &dyn TableLike, path: &[Step<'_>], best: Option<Span>) -> Option<Span> {
    let Some((Step::Key(k), rest)) = path.split_first() else {
        return best;
    };
    let Some((key, value)) = table.get_key_value(k) else {
        return best;
    };
    let best = key.span().or_else(|| value.span()).or(best);
    match rest.first() {
        None => best,
        Some(Step::Index(i)) => match value.as_array_of_tables().and_then(|a| a.get(*i)) {
            Some(t) => span_of(t, &rest[1..], t.span().or(best)),
            None => best,
        },
        Some(Step::Key(_)) => match value.as_table_like() {
            Some(t) => span_of(t, rest, best),
            None => best,
        },
    }
}

fn walk(table: &dyn TableLike, trail: &mut Vec<String>, offset: usize, found: &mut Option<String>) {
    let covers = |span: Option<Span>| span.is_some_and(|r| r.contains(&offset));
    for (name, value) in table.iter() {
        let key_span = table.get_key_value(name).and_then(|(k, _)| k.span());
        trail.push(name.to_string());
        if covers(key_span) || covers(value.span()) {
            *found = Some(trail.join("."));
        }
        if let Some(inner) = value.as_table_like() {
            walk(inner, trail, offset, found);
        } else if let Some(array) = value.as_array_of_tables() {
            for (i, inner) in array.iter().enumerate() {
                trail.push(i.to_string());
                walk(inner, trail, offset, found);
                trail.pop();
            }
        }
        trail.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[device]\nid = \"pi-01\"\n\n[broker]\nhost = \"x\"\nport = 70000\n\n[broker.tls]\nca_file = \"ca.crt\"\n";

    #[test]
    fn a_key_path_maps_to_the_line_that_sets_it() {
        let layout = Layout::new(TEXT);
        assert_eq!(
            layout.line_of_path(&[Step::Key("device"), Step::Key("id")]),
            Some(2)
        );
        assert_eq!(
            layout.line_of_path(&[Step::Key("broker"), Step::Key("port")]),
            Some(6)
        );
        let ca = [Step::Key("broker"), Step::Key("tls"), Step::Key("ca_file")];
        assert_eq!(layout.line_of_path(&ca), Some(9));
    }

    #[test]
    fn an_absent_key_maps_to_its_table() {
        let layout = Layout::new(TEXT);
        let absent = [
            Step::Key("broker"),
            Step::Key("tls"),
            Step::Key("cert_file"),
        ];
        assert_eq!(layout.line_of_path(&absent), Some(8));
    }

    #[test]
    fn an_offset_maps_back_to_its_dotted_key() {
        let layout = Layout::new(TEXT);
        let at = TEXT.find("70000").unwrap();
        assert_eq!(layout.key_at(at).as_deref(), Some("broker.port"));
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        let chosen = choose(
            Some(Path::new("/a.toml")),
            Some(std::ffi::OsStr::new("/b.toml")),
        );
        assert_eq!(chosen, Some(Chosen::Flag(PathBuf::from("/a.toml"))));
        let chosen = choose(None, Some(std::ffi::OsStr::new("/b.toml")));
        assert_eq!(chosen, Some(Chosen::Env(PathBuf::from("/b.toml"))));
    }
}
