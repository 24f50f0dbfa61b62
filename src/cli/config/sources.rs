//! Reading settings from the environment and from the TOML file.

use super::setting::{Kind, Setting, env_name};
use super::{CONFIG, ENV_PREFIX, JWT_SECRET_ENV};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Where a setting's value came from.
#[derive(Clone, Debug)]
pub(super) enum Source {
    Flag,
    Env(String),
    File(usize),
    Default,
}

/// A value from env or file: its raw text per item, checked already.
pub(super) struct Layered {
    pub(super) values: Vec<String>,
    pub(super) source: Source,
}

/// An env variable's value; empty counts as unset.
pub(super) fn env_value(name: &str) -> Result<Option<String>, String> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .map_err(|_| format!("{name}: not valid UTF-8")),
    }
}

/// The env values of every known setting, checked.
pub(super) fn read_env(known: &BTreeMap<String, Setting>) -> Result<BTreeMap<String, Layered>, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for s in known.values() {
        let name = s.env();
        let text = match env_value(&name) {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let values: Vec<String> = if s.list {
            text.split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(String::from)
                .collect()
        } else {
            vec![text]
        };
        let bad: Vec<String> = values
            .iter()
            .filter_map(|v| {
                s.check(v)
                    .err()
                    .map(|why| format!("{name}: invalid value {v:?} for {}: {why}", s.key))
            })
            .collect();
        if bad.is_empty() {
            out.insert(
                s.key.clone(),
                Layered {
                    values,
                    source: Source::Env(name),
                },
            );
        } else {
            errors.extend(bad);
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// Warns about `ROOMCAST_*` variables that are no setting (typos).
pub(super) fn warn_unknown_env(known: &BTreeMap<String, Setting>) {
    let mut names: BTreeSet<String> = known.values().map(Setting::env).collect();
    names.insert(env_name(CONFIG));
    names.insert(JWT_SECRET_ENV.to_string());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(ENV_PREFIX) && !names.contains(name) {
            log::warn!("{name} is not a roomcast setting and is ignored (README \"Configuration\")");
        }
    }
}

/// The settings in a TOML file, checked. Errors name the file, line and key.
pub(super) fn read_file(
    path: &Path,
    known: &BTreeMap<String, Setting>,
) -> Result<BTreeMap<String, Layered>, Vec<String>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("config file {shown}: {e}")])?;
    let doc = toml_edit::Document::parse(text.as_str()).map_err(|e| vec![format!("config file {shown}: {e}")])?;
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0)
    };
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (key, item) in doc.as_table().iter() {
        let line = line_of(doc.as_table().key(key).and_then(|k| k.span()));
        let at = format!("{shown}:{line}");
        let Some(s) = known.get(key) else {
            let hint = match known.get(&key.replace('_', "-")) {
                Some(s) => format!(
                    " (did you mean {}? keys are spelled like the flags, with dashes)",
                    s.key
                ),
                None if item.is_table_like() => " (the file is flat: no [sections], every key at the top)".to_string(),
                None => " (not a flag of roomcast serve or echo; see roomcast.example.toml)".to_string(),
            };
            errors.push(format!("{at}: unknown key {key}{hint}"));
            continue;
        };
        match values_of(s, item) {
            Ok(values) => {
                let bad: Vec<String> = values
                    .iter()
                    .filter_map(|v| {
                        s.check(v)
                            .err()
                            .map(|why| format!("{at}: {key}: invalid value {v:?}: {why}"))
                    })
                    .collect();
                if bad.is_empty() {
                    out.insert(
                        key.to_string(),
                        Layered {
                            values,
                            source: Source::File(line),
                        },
                    );
                } else {
                    errors.extend(bad);
                }
            }
            Err(found) => errors.push(format!("{at}: {key}: expected {}, found {found}", s.what())),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// A file value as raw text per item; `Err` holds the TOML type found instead.
fn values_of(s: &Setting, item: &toml_edit::Item) -> Result<Vec<String>, String> {
    let Some(value) = item.as_value() else {
        return Err("a table".to_string());
    };
    if s.list {
        let Some(array) = value.as_array() else {
            return Err(value.type_name().to_string());
        };
        array.iter().map(|v| scalar(s.kind, v)).collect()
    } else {
        scalar(s.kind, value).map(|v| vec![v])
    }
}

fn scalar(kind: Kind, value: &toml_edit::Value) -> Result<String, String> {
    use toml_edit::Value as V;
    match (kind, value) {
        (Kind::Integer, V::Integer(i)) => Ok(i.value().to_string()),
        (Kind::Float, V::Integer(i)) => Ok(i.value().to_string()),
        (Kind::Float, V::Float(f)) => Ok(f.value().to_string()),
        (Kind::Bool, V::Boolean(b)) => Ok(b.value().to_string()),
        (Kind::Text, V::String(s)) => Ok(s.value().clone()),
        // Text settings whose parser reads numbers (a type this module does not list).
        (Kind::Text, V::Integer(i)) => Ok(i.value().to_string()),
        (Kind::Text, V::Float(f)) => Ok(f.value().to_string()),
        (_, other) => Err(other.type_name().to_string()),
    }
}
