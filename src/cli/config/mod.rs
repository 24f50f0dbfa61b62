//! Settings from the environment and a TOML file, layered under the flags
//! (README "Configuration").
//!
//! Every long flag of `serve` and `echo` is a setting. Its env variable is
//! `ROOMCAST_` + the flag in upper snake case, its file key is the flag's
//! name (`max-message-size`). The list of settings, their types and their
//! checks all come from clap's own definitions, so a flag added to the
//! clap structs is a setting with no code here. Values from env and file
//! go through the flag's own value parser first (so an error can name the
//! variable, or the file, line and key) and are then handed to clap as if
//! typed after the real arguments, for the settings the command line left
//! out: flag > env > file > default.

mod setting;
mod sources;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};
use setting::{Kind, Setting, env_name, settings_of};
use sources::{Layered, Source, env_value, read_env, read_file, warn_unknown_env};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The subcommands that read the environment and `--config`.
const CONFIGURABLE: &[&str] = &["serve", "echo"];
/// Every env variable of a setting starts with this.
const ENV_PREFIX: &str = "ROOMCAST_";
/// The flag naming the file (env `ROOMCAST_CONFIG`).
const CONFIG: &str = "config";
const PRINT_CONFIG: &str = "print-config";
/// The HS256 secret itself. Not a flag, since the command line shows in
/// `ps`; not a file key, since `jwt-secret-file` is the file form.
pub const JWT_SECRET_ENV: &str = "ROOMCAST_JWT_SECRET";
/// The setting that `ROOMCAST_JWT_SECRET` is the alternative to.
const JWT_SECRET_FILE: &str = "jwt-secret-file";

/// Adds `--config` and `--print-config` to the configurable subcommands and
/// the env variable to each setting's help.
fn with_config_flags(root: Command) -> Command {
    let names: Vec<String> = root
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .filter(|n| CONFIGURABLE.contains(&n.as_str()))
        .collect();
    names.into_iter().fold(root, |root, name| {
        root.mut_subcommand(name, |sub| {
            sub.mut_args(|arg| match Setting::from_arg(&arg) {
                Some(setting) => {
                    let env = setting.env();
                    let help = arg.get_help().map(|h| format!("{h} [env: {env}]"));
                    let long_help = arg.get_long_help().map(|h| format!("{h}\n\n[env: {env}]"));
                    let arg = match help {
                        Some(h) => arg.help(h),
                        None => arg,
                    };
                    match long_help {
                        Some(h) => arg.long_help(h),
                        None => arg,
                    }
                }
                None => arg,
            })
            .arg(
                Arg::new(CONFIG)
                    .long(CONFIG)
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(format!(
                        "TOML file of settings, keys = these flags' names (README \"Configuration\") [env: {}]",
                        env_name(CONFIG)
                    )),
            )
            .arg(
                Arg::new(PRINT_CONFIG)
                    .long(PRINT_CONFIG)
                    .action(ArgAction::SetTrue)
                    .help("Print the effective configuration as TOML (secrets redacted) and exit"),
            )
        })
    })
}

/// Parses the command line of `C` with env and `--config` under it, as
/// `Parser::parse` does: usage and configuration errors exit with status 2,
/// `--print-config` prints and exits with 0.
pub fn parse<C, I, T>(args: I) -> C
where
    C: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let root = with_config_flags(C::command());
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let plan = match Plan::make(&root, &args) {
        Ok(plan) => plan,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            std::process::exit(2);
        }
    };
    let mut full = args;
    if let Some(plan) = &plan {
        full.extend(plan.extra_args());
    }
    let matches = root.try_get_matches_from(full).unwrap_or_else(|e| {
        let _ = e.print();
        // clap names flags only: say which of them came from env or file.
        if let Some(plan) = plan.as_ref().filter(|p| !p.layered.is_empty()) {
            let from: Vec<String> = plan
                .layered
                .iter()
                .map(|(key, v)| format!("--{key} ({})", describe(&v.source, plan.config_file.as_deref(), key)))
                .collect();
            eprintln!("note: from env or config file: {}", from.join(", "));
        }
        std::process::exit(e.exit_code())
    });
    if let Some(plan) = &plan
        && let Some((_, sub)) = matches.subcommand()
        && sub.get_flag(PRINT_CONFIG)
    {
        print!("{}", plan.render(sub));
        std::process::exit(0);
    }
    C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The layering for one run of a configurable subcommand.
struct Plan {
    command: String,
    /// The settings of this subcommand, in flag order.
    settings: Vec<Setting>,
    /// Settings given on the command line (by key).
    on_cli: BTreeSet<String>,
    /// Values from env or file for the settings the command line left out.
    layered: BTreeMap<String, Layered>,
    config_file: Option<PathBuf>,
    jwt_secret_from_env: bool,
}

impl Plan {
    /// `None` when the command is not configurable (or the command line is
    /// broken, which clap then reports on the real parse).
    fn make(root: &Command, args: &[OsString]) -> Result<Option<Plan>, Vec<String>> {
        let Ok(probe) = root.clone().ignore_errors(true).try_get_matches_from(args) else {
            return Ok(None);
        };
        let Some((name, sub_matches)) = probe.subcommand() else {
            return Ok(None);
        };
        if !CONFIGURABLE.contains(&name) {
            return Ok(None);
        }
        let sub = root.find_subcommand(name).expect("the parsed subcommand exists");
        let settings = settings_of(sub);
        // The settings of every configurable subcommand: one file serves
        // them all, and a value bad for one is bad for each.
        let mut known: BTreeMap<String, Setting> = BTreeMap::new();
        for other in root.get_subcommands().filter(|s| CONFIGURABLE.contains(&s.get_name())) {
            for s in settings_of(other) {
                known.entry(s.key.clone()).or_insert(s);
            }
        }
        let on_cli: BTreeSet<String> = settings
            .iter()
            .filter(|s| sub_matches.value_source(&s.id) == Some(ValueSource::CommandLine))
            .map(|s| s.key.clone())
            .collect();
        let config_file = match sub_matches.get_one::<PathBuf>(CONFIG) {
            Some(path) if sub_matches.value_source(CONFIG) == Some(ValueSource::CommandLine) => Some(path.clone()),
            _ => env_value(&env_name(CONFIG)).map_err(|e| vec![e])?.map(PathBuf::from),
        };

        let mut errors = Vec::new();
        let mut file = match &config_file {
            Some(path) => read_file(path, &known).unwrap_or_else(|e| {
                errors.extend(e);
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
        };
        let mut env = read_env(&known).unwrap_or_else(|e| {
            errors.extend(e);
            BTreeMap::new()
        });
        warn_unknown_env(&known);

        let mut layered = BTreeMap::new();
        for s in &settings {
            if on_cli.contains(&s.key) {
                continue;
            }
            if let Some(v) = env.remove(&s.key).or_else(|| file.remove(&s.key)) {
                layered.insert(s.key.clone(), v);
            }
        }

        let has_secret_file = settings.iter().any(|s| s.key == JWT_SECRET_FILE);
        let jwt_secret_from_env = has_secret_file && jwt_secret_from_env().is_some();
        if jwt_secret_from_env && (on_cli.contains(JWT_SECRET_FILE) || layered.contains_key(JWT_SECRET_FILE)) {
            let from = if on_cli.contains(JWT_SECRET_FILE) {
                format!("--{JWT_SECRET_FILE}")
            } else {
                describe(
                    &layered[JWT_SECRET_FILE].source,
                    config_file.as_deref(),
                    JWT_SECRET_FILE,
                )
            };
            errors.push(format!(
                "the HS256 secret is given twice, by {JWT_SECRET_ENV} and by {JWT_SECRET_FILE} ({from}): give one"
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(Plan {
            command: name.to_string(),
            settings,
            on_cli,
            layered,
            config_file,
            jwt_secret_from_env,
        }))
    }

    /// The layered values as flags, appended to the real command line.
    fn extra_args(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        for s in &self.settings {
            let Some(v) = self.layered.get(&s.key) else { continue };
            match s.switch {
                // A switch is given only to set its non-default value.
                Some(when_present) => {
                    if v.values.first().map(String::as_str) == Some(if when_present { "true" } else { "false" }) {
                        out.push(format!("--{}", s.key).into());
                    }
                }
                // `--key=value`, so a value starting with `-` stays a value.
                None => out.extend(v.values.iter().map(|value| format!("--{}={value}", s.key).into())),
            }
        }
        out
    }

    /// The effective configuration as a config file, each line saying where its value came from.
    fn render(&self, matches: &ArgMatches) -> String {
        let mut out = format!(
            "# roomcast {}: the effective configuration (flag > env > file > default).\n\
             # Valid as a --config file. Secrets are redacted; no file named here is read.\n",
            self.command
        );
        if let Some(path) = &self.config_file {
            let _ = writeln!(out, "# config file: {}", path.display());
        }
        for s in &self.settings {
            let raw: Vec<String> = matches
                .get_raw(&s.id)
                .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            // A Redis URL may carry a password.
            let raw: Vec<String> = if s.key == "redis" {
                raw.iter().map(|r| roomcast::engine::redis::url::redact(r)).collect()
            } else {
                raw
            };
            let source = if self.on_cli.contains(&s.key) {
                Source::Flag
            } else if let Some(v) = self.layered.get(&s.key) {
                v.source.clone()
            } else {
                Source::Default
            };
            let from = describe(&source, self.config_file.as_deref(), &s.key);
            if raw.is_empty() && !s.list {
                let _ = writeln!(out, "# {} =  # not set", s.key);
                continue;
            }
            let value = if s.list {
                toml_edit::Value::Array(raw.iter().map(|r| toml_value(s.kind, r)).collect())
            } else {
                toml_value(s.kind, &raw[0])
            };
            let _ = writeln!(out, "{} = {value}  # {from}", s.key);
        }
        if self.jwt_secret_from_env {
            let _ = writeln!(out, "# HS256 secret: [redacted], from {JWT_SECRET_ENV}");
        }
        out
    }
}

/// A raw value as TOML of its kind (text when it does not read as that kind).
fn toml_value(kind: Kind, raw: &str) -> toml_edit::Value {
    match kind {
        Kind::Integer => raw.parse::<i64>().map(toml_edit::Value::from).ok(),
        Kind::Float => raw.parse::<f64>().map(toml_edit::Value::from).ok(),
        Kind::Bool => raw.parse::<bool>().map(toml_edit::Value::from).ok(),
        Kind::Text => None,
    }
    .unwrap_or_else(|| toml_edit::Value::from(raw))
}

fn describe(source: &Source, file: Option<&Path>, key: &str) -> String {
    match source {
        Source::Flag => format!("--{key}"),
        Source::Env(name) => name.clone(),
        Source::File(line) => format!("{}:{line}", file.map(|f| f.display().to_string()).unwrap_or_default()),
        Source::Default => "default".to_string(),
    }
}

/// `ROOMCAST_JWT_SECRET`, as bytes with a trailing newline dropped (like
/// `--jwt-secret-file`); `None` when unset or empty.
pub fn jwt_secret_from_env() -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    let mut secret = std::env::var_os(JWT_SECRET_ENV)?.into_vec();
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    (!secret.is_empty()).then_some(secret)
}
