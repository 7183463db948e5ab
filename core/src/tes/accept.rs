//! What basho accepts of a task document, and what a workspace for it is made of: the argv
//! that runs its executors and the visas a `GA4GH-Passport` header carries.

use super::runner::{Inline, task_argv};
use super::{DATASET_URL, MAX_EXECUTORS, TAG_PROJECT, TAG_VISAS, TesExecutor, TesTask};
use crate::Ident;
use crate::protocol::{Launch, plain_absolute_path, plain_variable};
use crate::workspace::{MAX_CPUS, MAX_MEMORY_MIB, MAX_VISAS};

/// Where a container may write: its stdout and stderr files go under one of these.
const WRITABLE: [&str; 3] = ["/work/", "/results/", "/tmp/"];
/// Largest inline input, bytes: it reaches the container as one argument.
const MAX_CONTENT: usize = 64 * 1024;
/// Largest sum of a task's inline inputs, bytes.
const MAX_CONTENTS: usize = 128 * 1024;

const MAX_TAGS: usize = 64;
const MAX_ENV: usize = 128;
const MAX_NAME: usize = 256;
const MAX_TEXT: usize = 4096;
const MAX_FILES: usize = 256;

/// What a workspace for an accepted task is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The `basho_project` tag.
    pub project: Option<Ident>,
    /// The visas of the `basho_visas` tag.
    pub visas: Vec<String>,
    /// Datasets its inputs name, to mount.
    pub datasets: Vec<Ident>,
    /// CPU cores asked for.
    pub cpus: Option<u32>,
    /// Memory asked for, MiB.
    pub memory_mib: Option<u64>,
    /// The site its one zone names.
    pub site: Option<Ident>,
    /// The image every executor names.
    pub image: String,
    /// The argv that runs the executors in order (see [`super::runner`]).
    pub command: Vec<String>,
    /// The working directory and variables of a task run without the runner.
    pub launch: Launch,
    /// Said of the task as it was accepted (parameters dropped).
    pub warnings: Vec<String>,
    /// The task as stored: read-only fields cleared, visas taken out of its tags, dropped
    /// backend parameters gone.
    pub stored: TesTask,
}

fn too_long(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{what} is {} bytes; at most {max}", s.len()));
    }
    Ok(())
}

/// Refuses a path that is not absolute, has `..` or `.` segments, NUL, or ends in `/`.
fn container_path(what: &str, p: &str) -> Result<(), String> {
    if !plain_absolute_path(p) {
        return Err(format!(
            "{what} is {p:?}; name an absolute path without empty, . or .. segments"
        ));
    }
    too_long(what, p, MAX_TEXT)
}

/// The dataset and path in it a `basho://datasets/<DATASET>/<path>` URL names.
fn dataset_url(url: &str) -> Result<(Ident, &str), String> {
    let Some(rest) = url.strip_prefix(DATASET_URL) else {
        return Err(format!(
            "input url {url:?} is not a dataset; name one by ID as \
             {DATASET_URL}<DATASET>/<path>, or give its content inline (this platform fetches \
             nothing from outside)"
        ));
    };
    let (id, path) = rest.split_once('/').unwrap_or((rest, ""));
    let id = Ident::parse(id).map_err(|e| format!("input url {url:?}: dataset {e}"))?;
    if !path.is_empty() {
        container_path("input url's path", &format!("/{path}"))?;
    }
    Ok((id, path))
}

/// Refuses an executor basho does not run: no image or argv, a path that is not plain, a
/// stdout or stderr file outside where a container writes, a variable that is not plain or is
/// one of the site's own.
fn check_executor(i: usize, e: &TesExecutor) -> Result<(), String> {
    let at = format!("executors[{i}]");
    if e.image.trim().is_empty() {
        return Err(format!(
            "{at}.image is empty; name an image the site allows"
        ));
    }
    too_long(&format!("{at}.image"), &e.image, MAX_NAME)?;
    if e.command.is_empty() || e.command[0].is_empty() {
        return Err(format!("{at}.command is empty; give the argv to run"));
    }
    if e.command.iter().any(|a| a.contains('\0')) {
        return Err(format!("{at}.command has a NUL byte"));
    }
    if let Some(w) = &e.workdir {
        container_path(&format!("{at}.workdir"), w)?;
    }
    if let Some(p) = &e.stdin {
        container_path(&format!("{at}.stdin"), p)?;
    }
    for (what, p) in [("stdout", &e.stdout), ("stderr", &e.stderr)] {
        if let Some(p) = p {
            writable(&format!("{at}.{what}"), p)?;
        }
    }
    if e.env.len() > MAX_ENV {
        return Err(format!(
            "{at}.env has {} variables; at most {MAX_ENV}",
            e.env.len()
        ));
    }
    for (k, v) in &e.env {
        if !plain_variable(k) || v.contains('\0') {
            return Err(format!(
                "{at}.env {k:?} is not a valid variable (letters, digits and _, not starting \
                 with a digit; no NUL in its value)"
            ));
        }
        if k.starts_with("BASHO_") {
            return Err(format!(
                "{at}.env {k:?}: BASHO_ variables are set by the site"
            ));
        }
        too_long("an env value", v, MAX_TEXT)?;
    }
    Ok(())
}

/// Refuses a file a container cannot write: its root is read-only.
fn writable(what: &str, p: &str) -> Result<(), String> {
    container_path(what, p)?;
    if !WRITABLE.iter().any(|dir| p.starts_with(dir)) {
        return Err(format!(
            "{what} is {p:?}; the container's root is read-only, so name a file under {}",
            WRITABLE.join(", ")
        ));
    }
    Ok(())
}

/// What basho makes of `task`: the checks a TES request meets before anything is stored.
pub fn accept(mut task: TesTask) -> Result<Accepted, String> {
    let mut warnings = Vec::new();
    if let Some(name) = &task.name {
        too_long("name", name, MAX_NAME)?;
    }
    if let Some(d) = &task.description {
        too_long("description", d, MAX_TEXT)?;
    }
    match task.executors.len() {
        0 => return Err("executors is empty; a task runs at least one".into()),
        n if n > MAX_EXECUTORS => {
            return Err(format!(
                "{n} executors; at most {MAX_EXECUTORS} in one task"
            ));
        }
        _ => {}
    }
    for (i, e) in task.executors.iter().enumerate() {
        check_executor(i, e)?;
    }
    let image = task.executors[0].image.clone();
    if let Some(e) = task.executors.iter().find(|e| e.image != image) {
        return Err(format!(
            "executors name images {image:?} and {:?}; a task's executors run in order in one \
             container here, so they share one image",
            e.image
        ));
    }
    if task.volumes.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(
            "volumes are not supported yet; /work is the executors' shared scratch space".into(),
        );
    }
    let mut datasets: Vec<Ident> = Vec::new();
    let inputs = task.inputs.get_or_insert_with(Vec::new);
    if inputs.len() > MAX_FILES {
        return Err(format!("{} inputs; at most {MAX_FILES}", inputs.len()));
    }
    let mut inline = Vec::new();
    for input in inputs.iter_mut() {
        // The specification's default, said in the task as stored.
        input.kind.get_or_insert_default();
    }
    for (i, input) in inputs.iter().enumerate() {
        container_path(&format!("inputs[{i}].path"), &input.path)?;
        if let Some(content) = &input.content {
            if input.url.is_some() {
                return Err(format!("inputs[{i}] has both url and content; give one"));
            }
            writable(&format!("inputs[{i}].path"), &input.path)?;
            if input.kind == Some(super::FileType::Directory) {
                return Err(format!(
                    "inputs[{i}] is a DIRECTORY with content; inline content is one file"
                ));
            }
            if content.len() > MAX_CONTENT {
                return Err(format!(
                    "inputs[{i}].content is {} bytes; inline content is at most {MAX_CONTENT}",
                    content.len()
                ));
            }
            if content.contains('\0') {
                return Err(format!("inputs[{i}].content has a NUL byte"));
            }
            inline.push(Inline {
                path: input.path.clone(),
                content: content.clone(),
            });
            continue;
        }
        let Some(url) = &input.url else {
            return Err(format!("inputs[{i}] has neither url nor content"));
        };
        let (id, path) = dataset_url(url).map_err(|e| format!("inputs[{i}]: {e}"))?;
        let mounted = if path.is_empty() {
            format!("/data/{id}")
        } else {
            format!("/data/{id}/{path}")
        };
        if input.path != mounted {
            return Err(format!(
                "inputs[{i}].path is {:?}; dataset {id} is mounted read-only, never copied, so \
                 its file is at {mounted:?}",
                input.path
            ));
        }
        if !datasets.contains(&id) {
            datasets.push(id);
        }
    }
    let total: usize = inline.iter().map(|f| f.content.len()).sum();
    if total > MAX_CONTENTS {
        return Err(format!(
            "inline inputs hold {total} bytes; at most {MAX_CONTENTS} in one task (larger files \
             come from a dataset)"
        ));
    }
    let outputs = task.outputs.get_or_insert_with(Vec::new);
    if outputs.len() > MAX_FILES {
        return Err(format!("{} outputs; at most {MAX_FILES}", outputs.len()));
    }
    for output in outputs.iter_mut() {
        output.kind.get_or_insert_default();
    }
    for (i, output) in outputs.iter().enumerate() {
        container_path(&format!("outputs[{i}].path"), &output.path)?;
        if !output.path.starts_with("/results/") {
            return Err(format!(
                "outputs[{i}].path is {:?}; outputs leave only from under /results, through \
                 the results airlock",
                output.path
            ));
        }
        if output.path.contains(['*', '?', '[']) || output.path_prefix.is_some() {
            return Err(format!(
                "outputs[{i}].path: wildcards are not supported yet; name each file"
            ));
        }
        too_long(&format!("outputs[{i}].url"), &output.url, MAX_TEXT)?;
    }
    let (mut cpus, mut memory_mib, mut site) = (None, None, None);
    if let Some(r) = task.resources.as_mut() {
        if let Some(c) = r.cpu_cores {
            if c < 1 || c > i64::from(MAX_CPUS) {
                return Err(format!(
                    "resources.cpu_cores is {c}; ask for 1 to {MAX_CPUS}"
                ));
            }
            cpus = Some(c as u32);
        }
        if let Some(gb) = r.ram_gb {
            let mib = (gb * 1024.0).ceil();
            if !gb.is_finite() || gb <= 0.0 || mib > MAX_MEMORY_MIB as f64 {
                return Err(format!(
                    "resources.ram_gb is {gb}; ask for more than 0 and at most {} GB",
                    MAX_MEMORY_MIB / 1024
                ));
            }
            memory_mib = Some((mib as u64).max(16));
        }
        if let Some(gb) = r.disk_gb {
            if !gb.is_finite() || gb < 0.0 {
                return Err(format!("resources.disk_gb is {gb}; ask for 0 or more"));
            }
            warnings.push("resources.disk_gb is not applied: /work is sized by the site".into());
        }
        match r.zones.as_slice() {
            [] => {}
            [zone] => {
                site = Some(Ident::parse(zone).map_err(|e| format!("resources.zones: {e}"))?);
            }
            _ => return Err("resources.zones names more than one site; name one, or none".into()),
        }
        if !r.backend_parameters.is_empty() {
            let keys: Vec<_> = r.backend_parameters.keys().cloned().collect();
            if r.backend_parameters_strict == Some(true) {
                return Err(format!(
                    "resources.backend_parameters {keys:?} are not supported (this server \
                     supports none) and backend_parameters_strict is set"
                ));
            }
            warnings.push(format!(
                "resources.backend_parameters {keys:?} are not supported and were dropped"
            ));
            r.backend_parameters.clear();
        }
    }
    let mut visas = Vec::new();
    let mut project = None;
    if let Some(tags) = task.tags.as_mut() {
        if let Some(list) = tags.remove(TAG_VISAS) {
            visas = list
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if tags.len() > MAX_TAGS {
            return Err(format!("{} tags; at most {MAX_TAGS}", tags.len()));
        }
        for (k, v) in tags.iter() {
            too_long("a tag key", k, MAX_NAME)?;
            too_long("a tag value", v, MAX_TEXT)?;
        }
        if let Some(p) = tags.get(TAG_PROJECT) {
            project = Some(Ident::parse(p).map_err(|e| format!("tag {TAG_PROJECT}: {e}"))?);
        }
    }
    if visas.len() > MAX_VISAS {
        return Err(format!("{} visas; at most {MAX_VISAS}", visas.len()));
    }
    let (command, mut launch) = task_argv(&task.executors, &inline);
    // What leaves when the task ends: its outputs, and executors' stdout and stderr under
    // /results, which are outputs too.
    let streams = task
        .executors
        .iter()
        .flat_map(|e| [&e.stdout, &e.stderr])
        .flatten();
    for path in task
        .outputs
        .iter()
        .flatten()
        .map(|o| &o.path)
        .chain(streams)
    {
        if let Some(name) = path.strip_prefix("/results/")
            && !launch.outputs.iter().any(|o| o == name)
        {
            launch.outputs.push(name.to_owned());
        }
    }
    task.id = None;
    task.state = None;
    task.logs = None;
    task.creation_time = None;
    Ok(Accepted {
        project,
        visas,
        datasets,
        cpus,
        memory_mib,
        site,
        image,
        command,
        launch,
        warnings,
        stored: task,
    })
}

/// The visas a `GA4GH-Passport` header carries: passports (their `ga4gh_passport_v1` visas) or
/// visas themselves, separated by commas or white space. Each visa is verified where it is used;
/// a passport's own signature adds nothing to that and is not checked.
pub fn passport_visas(header: &str) -> Result<Vec<String>, String> {
    let mut visas = Vec::new();
    for jwt in header
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        let claims = crate::visa::segment(jwt, 1, "payload")
            .map_err(|e| format!("the GA4GH-Passport header: {e}"))?;
        if let Some(list) = claims.get("ga4gh_passport_v1") {
            let list = list
                .as_array()
                .ok_or("the GA4GH-Passport header: ga4gh_passport_v1 is not a list of visas")?;
            for v in list {
                let v = v.as_str().ok_or(
                    "the GA4GH-Passport header: ga4gh_passport_v1 holds something not a JWT",
                )?;
                visas.push(v.to_owned());
            }
        } else if claims.get("ga4gh_visa_v1").is_some() {
            visas.push(jwt.to_owned());
        } else {
            return Err(
                "the GA4GH-Passport header holds a JWT that is neither a passport nor a visa"
                    .into(),
            );
        }
    }
    Ok(visas)
}
