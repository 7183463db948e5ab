//! How a task's executors run in its one container: in order, each with its own working
//! directory, variables and stdin/stdout/stderr files, after the task's inline inputs are
//! written. Nothing of the task is ever parsed by a shell: the image's `/bin/sh` runs the fixed
//! [`RUNNER`] script, and every path, value and argument reaches it as a positional parameter.

use super::TesExecutor;
use crate::protocol::Launch;

/// The `$0` of the runner, as `ps` in the container shows it.
pub const RUNNER_NAME: &str = "tes-runner";

/// The runner. Its parameters are records, one after another:
///
/// - `F <path> <content>`: write an inline input (its directory made first);
/// - `E <ignore_error 0|1> <workdir> <stdin> <stdout> <stderr> <variables> <arguments>`, then
///   that many `NAME=value` variables and that many argv words: run an executor, an empty
///   field meaning none.
///
/// Each executor runs in a subshell that keeps only its own words (the others are rotated out),
/// exports its variables, changes directory, redirects and `exec`s its argv. The first one that
/// exits non-zero without `ignore_error` ends the runner with its code; otherwise it exits 0.
pub const RUNNER: &str = r#"set -u
while [ $# -gt 0 ]; do
  if [ "$1" = F ]; then
    mkdir -p "${2%/*}" && printf %s "$3" >"$2" || exit 1
    shift 3
    continue
  fi
  ignore=$2 wd=$3 in=$4 out=$5 err=$6 ne=$7 na=$8
  shift 8
  n=$((ne + na))
  (
    t=$# j=0
    while [ "$j" -lt "$t" ]; do
      j=$((j + 1)) a=$1
      shift
      if [ "$j" -le "$n" ]; then set -- "$@" "$a"; fi
    done
    while [ "$ne" -gt 0 ]; do export "$1" || exit 125; shift; ne=$((ne - 1)); done
    if [ -n "$wd" ]; then cd "$wd" || exit 125; fi
    if [ -n "$in" ]; then exec <"$in"; fi
    if [ -n "$out" ]; then exec >"$out"; fi
    if [ -n "$err" ]; then exec 2>"$err"; fi
    exec "$@"
  )
  code=$?
  shift "$n"
  if [ "$code" -ne 0 ] && [ "$ignore" = 0 ]; then exit "$code"; fi
done
exit 0
"#;

/// An inline input: a file the runner writes before the first executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inline {
    /// Absolute path in the container, under a writable directory.
    pub path: String,
    /// Its bytes, as text.
    pub content: String,
}

/// The argv and launch that run `executors` after writing `inline`. One executor with no
/// redirections and no inline inputs runs its argv as it is, with its working directory and
/// variables in the launch; anything else runs through [`RUNNER`].
pub fn task_argv(executors: &[TesExecutor], inline: &[Inline]) -> (Vec<String>, Launch) {
    if let [e] = executors
        && inline.is_empty()
        && e.stdin.is_none()
        && e.stdout.is_none()
        && e.stderr.is_none()
    {
        let launch = Launch {
            workdir: e.workdir.clone(),
            env: e.env.clone(),
            ..Launch::default()
        };
        return (e.command.clone(), launch);
    }
    let mut argv: Vec<String> = ["/bin/sh", "-c", RUNNER, RUNNER_NAME]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for f in inline {
        argv.extend(["F".to_owned(), f.path.clone(), f.content.clone()]);
    }
    let field = |f: &Option<String>| f.clone().unwrap_or_default();
    for e in executors {
        argv.extend([
            "E".to_owned(),
            if e.ignore_error == Some(true) {
                "1"
            } else {
                "0"
            }
            .to_owned(),
            field(&e.workdir),
            field(&e.stdin),
            field(&e.stdout),
            field(&e.stderr),
            e.env.len().to_string(),
            e.command.len().to_string(),
        ]);
        argv.extend(e.env.iter().map(|(k, v)| format!("{k}={v}")));
        argv.extend(e.command.iter().cloned());
    }
    (argv, Launch::default())
}
