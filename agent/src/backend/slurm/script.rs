//! The sbatch script of a workspace, rendered from a minijinja template with every value escaped.
//!
//! Escaping is the renderer's job, not the template author's: every `{{ value }}` is shell-quoted
//! on output (a list becomes a space-separated row of quoted words), the `safe` filter is gone,
//! and nothing is printed unquoted except the template's own literal text. The same quoting is
//! right for `#SBATCH` lines: sbatch splits them into words itself, without a shell, honouring
//! `'...'`, `"..."` and the `'\''` idiom as bash does, but taking a backslash as an escape even
//! inside single quotes (checked against Slurm 22.05's `sbatch -v --test-only`). Directive values
//! therefore carry no backslash and no control character; anything else comes through intact.
//!
//! After rendering, the script itself is checked (see [`check_script`]), so a template edited by
//! a site admin cannot silently lose the job name, the time limit or a directive.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, Output, State, UndefinedBehavior};

use super::runtime::{cleanup_argv, container_argv, sif_image};
use crate::backend::LaunchSpec;
use crate::config::{Runtime, SlurmConfig};

pub mod example;

pub use example::{example_config, example_spec, example_time};

/// The built-in job script template; sites copy it to start their own (`template` in the config).
pub const DEFAULT_TEMPLATE: &str = include_str!("../../../../templates/slurm/workspace.sh.j2");

/// Options a site's `directives` may not set: the agent finds jobs by name, reads the expiry from
/// the comment and relies on the time limit to end the job at the expiry.
const PROTECTED: &[&str] = &["job-name", "comment", "time"];

/// The job name of a workspace, by which the agent finds (and re-adopts) its job.
pub fn job_name(workspace: &str) -> String {
    format!("basho-{workspace}")
}

/// The job's `--comment`: the site and the expiry, so `squeue`/`sacct` output alone tells the
/// agent when a job it re-adopts must end.
pub fn comment(spec: &LaunchSpec) -> String {
    format!(
        "basho site={} expires={}",
        spec.site,
        spec.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// Why a script cannot be rendered. Every cause is permanent for the spec and config at hand
/// (a bad template, a bad config value, a spec the runtime refuses): retrying will not help.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScriptError(pub String);

fn err(msg: impl Into<String>) -> ScriptError {
    ScriptError(msg.into())
}

/// What a template sees. Documented for template authors in docs/configuration.md.
#[derive(Debug)]
struct Context {
    job_name: String,
    workspace: String,
    project: String,
    site: String,
    runtime: &'static str,
    expires_at: String,
    directives: Vec<String>,
    run: Vec<String>,
    image_path: Option<String>,
    image_sha256: Option<String>,
    cleanup: Option<Vec<String>>,
}

impl Context {
    /// The template's variables; absent values are `none` (printing one is an error).
    fn into_value(self) -> Value {
        let opt = |v: Option<Value>| v.unwrap_or(Value::from(()));
        Value::from(std::collections::BTreeMap::from([
            ("job_name", Value::from(self.job_name)),
            ("workspace", Value::from(self.workspace)),
            ("project", Value::from(self.project)),
            ("site", Value::from(self.site)),
            ("runtime", Value::from(self.runtime)),
            ("expires_at", Value::from(self.expires_at)),
            ("directives", Value::from(self.directives)),
            ("run", Value::from(self.run)),
            ("image_path", opt(self.image_path.map(Value::from))),
            ("image_sha256", opt(self.image_sha256.map(Value::from))),
            ("cleanup", opt(self.cleanup.map(Value::from))),
        ]))
    }
}

/// The template a site uses: the file `cfg.template` names (a relative path is taken from the
/// current directory; configs should name an absolute one), or [`DEFAULT_TEMPLATE`].
pub fn template_text(cfg: &SlurmConfig) -> Result<std::borrow::Cow<'static, str>, ScriptError> {
    match &cfg.template {
        None => Ok(DEFAULT_TEMPLATE.into()),
        Some(path) => std::fs::read_to_string(path).map(Into::into).map_err(|e| {
            err(format!(
                "cannot read the job script template {}: {e}",
                path.display()
            ))
        }),
    }
}

/// Renders the job script submitted for `spec`.
pub fn render(
    template: &str,
    cfg: &SlurmConfig,
    spec: &LaunchSpec,
    now: DateTime<Utc>,
) -> Result<String, ScriptError> {
    let directives = directives(cfg, spec, now)?;
    let program = cfg.runtime_path.as_deref().unwrap_or(cfg.runtime.name());
    let run = container_argv(cfg.runtime, program, spec).map_err(|e| err(e.to_string()))?;
    let (image_path, image_sha256) = match cfg.runtime {
        Runtime::Apptainer => {
            let (path, hex) = sif_image(&spec.image).map_err(|e| err(e.to_string()))?;
            (Some(path), Some(hex))
        }
        Runtime::Docker | Runtime::Podman => (None, None),
    };
    let ctx = Context {
        job_name: job_name(&spec.workspace),
        workspace: spec.workspace.to_string(),
        project: spec.project.to_string(),
        site: spec.site.to_string(),
        runtime: cfg.runtime.name(),
        expires_at: spec.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        directives: directives.clone(),
        run,
        image_path,
        image_sha256,
        cleanup: cleanup_argv(cfg.runtime, program, &spec.workspace),
    };
    let env = environment()?;
    let script = env
        .render_str(template, ctx.into_value())
        .map_err(|e| err(format!("job script template: {e:#}")))?;
    check_script(&script, &spec.workspace, &directives)?;
    Ok(script)
}

/// Checks a template: it must parse, render for the example spec under every runtime, and pass
/// the script checks.
pub fn validate(template: &str) -> Result<(), ScriptError> {
    for runtime in [Runtime::Apptainer, Runtime::Docker, Runtime::Podman] {
        validate_for(template, runtime)?;
    }
    Ok(())
}

/// Like [`validate`], for one runtime only (a site's template need only serve its own).
pub fn validate_for(template: &str, runtime: Runtime) -> Result<(), ScriptError> {
    let cfg = example_config(runtime);
    render(template, &cfg, &example_spec(runtime), example_time())
        .map(drop)
        .map_err(|e| err(format!("with runtime {}: {e}", runtime.name())))
}

/// The job's `#SBATCH` options, in order: the agent's own, then the site's.
pub fn directives(
    cfg: &SlurmConfig,
    spec: &LaunchSpec,
    now: DateTime<Utc>,
) -> Result<Vec<String>, ScriptError> {
    let r = &spec.resources;
    let mut out = vec![
        format!("--job-name={}", job_name(&spec.workspace)),
        format!("--time={}", time_limit(spec.expires_at, now)?),
        format!("--cpus-per-task={}", r.cpus),
        format!("--mem={}M", r.memory_mib),
    ];
    if r.gpus > 0 {
        out.push(format!("--gres=gpu:{}", r.gpus));
    }
    let account = cfg
        .accounts
        .get(spec.project.as_str())
        .or(cfg.default_account.as_ref());
    if let Some(a) = account {
        out.push(directive_value("account", a)?);
    }
    if let Some(p) = &cfg.partition {
        out.push(directive_value("partition", p)?);
    }
    if let Some(q) = &cfg.qos {
        out.push(directive_value("qos", q)?);
    }
    if let Some(n) = cfg.nice {
        out.push(format!("--nice={n}"));
    }
    out.push(directive_value("comment", &comment(spec))?);
    if let Some(dir) = &cfg.output_dir {
        let dir = dir.trim_end_matches('/');
        out.push(directive_value("output", &format!("{dir}/basho-%j.out"))?);
    }
    for d in &cfg.directives {
        out.push(site_directive(d)?);
    }
    Ok(out)
}

/// `--time` as `D-HH:MM:SS`: the time to the expiry rounded up to whole minutes, at least one.
fn time_limit(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<String, ScriptError> {
    let ms = (expires_at - now).num_milliseconds();
    if ms <= 0 {
        return Err(err(format!(
            "the workspace expired at {} (now {}); not submitting it",
            expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            now.to_rfc3339_opts(SecondsFormat::Secs, true)
        )));
    }
    let minutes = (ms + 59_999) / 60_000;
    Ok(format!(
        "{}-{:02}:{:02}:00",
        minutes / 1440,
        minutes % 1440 / 60,
        minutes % 60
    ))
}

/// `--<name>=<value>`, refusing what sbatch's own word splitting would change: control
/// characters (a newline would end the line) and backslashes (an escape to sbatch, even in
/// single quotes, but not to bash).
fn directive_value(name: &str, value: &str) -> Result<String, ScriptError> {
    if value.is_empty() {
        return Err(err(format!("sbatch --{name} would be empty")));
    }
    if value.chars().any(|c| c.is_control() || c == '\\') {
        return Err(err(format!(
            "sbatch --{name} value {value:?} has a control character or backslash, which a \
             #SBATCH line cannot carry"
        )));
    }
    Ok(format!("--{name}={value}"))
}

/// One of the site's `directives`: a single long option, not one the agent relies on.
fn site_directive(d: &str) -> Result<String, ScriptError> {
    let Some(rest) = d.strip_prefix("--") else {
        return Err(err(format!(
            "directive {d:?} must be one long option such as --qos=normal"
        )));
    };
    let name = rest.split('=').next().unwrap_or(rest);
    if name.is_empty() {
        return Err(err(format!(
            "directive {d:?} must be one long option such as --qos=normal"
        )));
    }
    // sbatch accepts any unambiguous prefix of an option (--comm, --job), so prefixes count too.
    if PROTECTED.iter().any(|p| p.starts_with(name)) {
        return Err(err(format!(
            "directive {d:?} would override --{}, which the agent sets itself",
            PROTECTED
                .iter()
                .find(|p| p.starts_with(name))
                .unwrap_or(&"")
        )));
    }
    if d.chars().any(|c| c.is_control() || c == '\\') {
        return Err(err(format!(
            "directive {d:?} has a control character or backslash, which a #SBATCH line \
             cannot carry"
        )));
    }
    Ok(d.to_string())
}

/// The template environment: strict about undefined values, every output shell-quoted.
fn environment() -> Result<Environment<'static>, ScriptError> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .map_err(|e| err(format!("template syntax: {e}")))?;
    env.set_syntax(syntax);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::Custom("shell".into()));
    env.set_formatter(format_shell);
    // `safe` would print a value unquoted: the one thing a job script template must never do.
    env.remove_filter("safe");
    env.remove_filter("escape");
    env.remove_filter("e");
    env.add_filter("shquote", shquote_filter);
    Ok(env)
}

fn template_error(msg: String) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, msg)
}

/// Quotes a value as shell words: a string or number as one word, a list as its items.
fn quote_value(value: &Value) -> Result<String, minijinja::Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => Err(template_error(
            "a value printed here is none; guard it with {% if .. %}".into(),
        )),
        ValueKind::Seq | ValueKind::Iterable => {
            let mut words = Vec::new();
            for item in value.try_iter()? {
                if matches!(item.kind(), ValueKind::Seq | ValueKind::Map) {
                    return Err(template_error("cannot print a nested list as words".into()));
                }
                words.push(quote_value(&item)?);
            }
            Ok(words.join(" "))
        }
        ValueKind::Map => Err(template_error("cannot print a map as shell words".into())),
        _ => {
            let s = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            shell_quote(&s).map_err(|e| template_error(e.0))
        }
    }
}

fn format_shell(out: &mut Output, _: &mut State, value: &Value) -> Result<(), minijinja::Error> {
    let text = if value.is_safe() {
        // Only `shquote` makes safe strings (`safe` is removed): already quoted.
        value.to_string()
    } else {
        quote_value(value)?
    };
    out.write_str(&text)
        .map_err(|e| template_error(format!("writing the script: {e}")))
}

fn shquote_filter(value: &Value) -> Result<Value, minijinja::Error> {
    if value.is_safe() {
        return Ok(value.clone());
    }
    Ok(Value::from_safe_string(quote_value(value)?))
}

/// Quotes `word` for bash: unquoted when it is plain, `'...'` (with `'\''` for a quote) when it
/// is not, `$'...'` when it holds control characters, so every value stays on its own line.
pub fn shell_quote(word: &str) -> Result<String, ScriptError> {
    if word.contains('\0') {
        return Err(err(
            "a value holds a NUL byte, which no shell word can carry",
        ));
    }
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"_-./:@%+,".contains(&b);
    // `=` is plain only in an option: `NAME=value` as a first word would be an assignment.
    let plain_word = !word.is_empty()
        && word
            .bytes()
            .all(|b| plain(b) || (b == b'=' && word.starts_with('-')));
    if plain_word {
        return Ok(word.to_string());
    }
    if !word.chars().any(char::is_control) {
        return Ok(format!("'{}'", word.replace('\'', r"'\''")));
    }
    let mut out = String::from("$'");
    for c in word.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// Checks a rendered script before it is submitted: no NUL or CR, a `#!` line, every directive
/// on its own `#SBATCH` line before the first command (sbatch silently ignores later ones),
/// exactly one job name (the workspace's) and no other line setting a protected option.
pub fn check_script(
    script: &str,
    workspace: &str,
    directives: &[String],
) -> Result<(), ScriptError> {
    if script.contains('\0') || script.contains('\r') {
        return Err(err(
            "the job script holds a NUL or CR character; sbatch would misread it",
        ));
    }
    if !script.starts_with("#!") {
        return Err(err(
            "the job script must start with an interpreter line such as #!/bin/bash",
        ));
    }
    let expected: Vec<String> = directives
        .iter()
        .map(|d| shell_quote(d).map(|q| format!("#SBATCH {q}")))
        .collect::<Result<_, _>>()?;
    let mut seen = vec![false; expected.len()];
    let mut first_command: Option<usize> = None;
    for (n, line) in script.lines().enumerate().skip(1) {
        let lineno = n + 1;
        let trimmed = line.trim_start();
        if trimmed.starts_with("#SBATCH") {
            if trimmed.len() != line.len() {
                return Err(err(format!(
                    "line {lineno}: an indented #SBATCH line is ignored by sbatch; start it at \
                     the first column"
                )));
            }
            if let Some(c) = first_command {
                return Err(err(format!(
                    "line {lineno}: #SBATCH after the first command (line {c}); sbatch ignores \
                     it silently, so move it up"
                )));
            }
            if let Some(i) = expected.iter().position(|e| e == line) {
                if seen[i] {
                    return Err(err(format!("line {lineno}: directive {line:?} repeated")));
                }
                seen[i] = true;
            } else if let Some(p) = sets_protected(line) {
                return Err(err(format!(
                    "line {lineno}: the template sets --{p} itself; the agent sets it \
                     (remove the line)"
                )));
            }
        } else if first_command.is_none() && !trimmed.is_empty() && !trimmed.starts_with('#') {
            first_command = Some(lineno);
        }
    }
    let name = format!("--job-name={}", job_name(workspace));
    if !directives.contains(&name) {
        return Err(err(format!("the directives lack {name}")));
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(err(format!(
            "the job script has no line `#SBATCH {}`; render every directive with \
             `{{% for d in directives %}}#SBATCH {{{{ d }}}}{{% endfor %}}` before the first command",
            directives[i]
        )));
    }
    Ok(())
}

/// The protected option a hand-written `#SBATCH` line sets, if any (`-J`, `-t` or a long form or
/// prefix of `--job-name`, `--comment`, `--time`, quoted or not).
fn sets_protected(line: &str) -> Option<&'static str> {
    let rest = line.strip_prefix("#SBATCH")?;
    for word in rest.split_whitespace() {
        let word: String = word.chars().filter(|c| !matches!(c, '\'' | '"')).collect();
        if word.starts_with('#') {
            break;
        }
        if word.starts_with("-J") {
            return Some("job-name");
        }
        if word.starts_with("-t") {
            return Some("time");
        }
        if let Some(long) = word.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or("");
            if let Some(p) = PROTECTED
                .iter()
                .find(|p| !name.is_empty() && p.starts_with(name))
            {
                return Some(p);
            }
        }
    }
    None
}

/// Compares `actual` with `agent/tests/golden/slurm/<name>`; `BASHO_UPDATE_GOLDEN=1` rewrites it.
#[cfg(test)]
pub(crate) fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/slurm")
        .join(name);
    if std::env::var_os("BASHO_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("golden dir");
        std::fs::write(&path, actual).expect("golden file written");
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs from what is produced now:\n{actual}\nif the change is intended, rerun with \
         BASHO_UPDATE_GOLDEN=1 and commit the result",
        path.display()
    );
}

#[cfg(test)]
mod tests;
