//! One flag seen as a setting: its key, env name, TOML type and check.

use super::{CONFIG, ENV_PREFIX, PRINT_CONFIG};
use clap::builder::ValueParser;
use clap::{Arg, ArgAction, Command};
use std::any::TypeId;

/// How a setting is written in TOML, from the type its value parser makes.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Kind {
    Integer,
    Float,
    Bool,
    /// Strings, paths, addresses, enum names: whatever the parser reads from text.
    Text,
}

/// One flag seen as a setting.
#[derive(Clone)]
pub(super) struct Setting {
    /// The long flag name: the file key.
    pub(super) key: String,
    /// clap's id, for reading the matches.
    pub(super) id: String,
    pub(super) kind: Kind,
    /// Repeatable (`--allow-origin`): an array in TOML, comma-separated in env.
    pub(super) list: bool,
    /// A switch (`--no-deflate`): present means this value.
    pub(super) switch: Option<bool>,
    pub(super) parser: ValueParser,
}

impl Setting {
    pub(super) fn from_arg(arg: &Arg) -> Option<Setting> {
        let key = arg.get_long()?;
        if matches!(key, "help" | "version" | CONFIG | PRINT_CONFIG) {
            return None;
        }
        let (list, switch) = match arg.get_action() {
            ArgAction::Set => (false, None),
            ArgAction::Append => (true, None),
            ArgAction::SetTrue => (false, Some(true)),
            ArgAction::SetFalse => (false, Some(false)),
            // Counts, help and version are no settings.
            _ => return None,
        };
        let parser = arg.get_value_parser().clone();
        let ty = parser.type_id();
        let is = |ids: &[TypeId]| ids.iter().any(|id| ty == *id);
        let kind = if switch.is_some() || ty == TypeId::of::<bool>() {
            Kind::Bool
        } else if is(&[
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<isize>(),
        ]) {
            Kind::Integer
        } else if is(&[TypeId::of::<f32>(), TypeId::of::<f64>()]) {
            Kind::Float
        } else {
            Kind::Text
        };
        Some(Setting {
            key: key.to_string(),
            id: arg.get_id().to_string(),
            kind,
            list,
            switch,
            parser,
        })
    }

    pub(super) fn env(&self) -> String {
        env_name(&self.key)
    }

    /// Runs one value through the flag's own parser; the error is clap's reason.
    pub(super) fn check(&self, raw: &str) -> Result<(), String> {
        let probe = Command::new("check").no_binary_name(true).arg(
            Arg::new("v")
                .long("v")
                .action(ArgAction::Set)
                .value_parser(self.parser.clone()),
        );
        match probe.try_get_matches_from([format!("--v={raw}")]) {
            Ok(_) => Ok(()),
            Err(e) => Err(reason(&e)),
        }
    }

    pub(super) fn what(&self) -> &'static str {
        match (self.kind, self.list) {
            (Kind::Integer, false) => "an integer",
            (Kind::Float, false) => "a number",
            (Kind::Bool, false) => "true or false",
            (Kind::Text, false) => "a string",
            (Kind::Integer, true) => "an array of integers",
            (Kind::Float, true) => "an array of numbers",
            (Kind::Bool, true) => "an array of booleans",
            (Kind::Text, true) => "an array of strings",
        }
    }
}

/// `max-message-size` -> `ROOMCAST_MAX_MESSAGE_SIZE`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_uppercase().replace('-', "_"))
}

/// The short reason in a clap value error, without its usage text.
pub(super) fn reason(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    if let Some(source) = std::error::Error::source(e) {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        return format!("expected one of: {}", valid.join(", "));
    }
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.trim_start_matches("error: ").to_string()
}

/// The settings of each configurable subcommand, from the clap definitions.
pub(super) fn settings_of(cmd: &Command) -> Vec<Setting> {
    cmd.get_arguments().filter_map(Setting::from_arg).collect()
}
