//! The demo image `basho/demo:3`: a static busybox, the federated demo's two counting scripts
//! and a few files, assembled in memory and
//! imported into the local engine, so `basho dev` runs workspaces without reaching any registry.
//!
//! Self-contained on purpose (no `crate::` paths): the agent's Docker tests compile it as well.

use std::path::Path;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;

/// The demo image's name, as the shell template and the dev site configs call it.
pub const DEMO_IMAGE_NAME: &str = "basho/demo";
/// Its tag; bump it whenever the root filesystem changes.
pub const DEMO_IMAGE_TAG: &str = "3";
/// Where the static busybox is taken from.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// Applets linked into `/bin`: enough for a shell session and for the isolation checks.
pub const APPLETS: &[&str] = &[
    "sh",
    "ls",
    "cat",
    "head",
    "tail",
    "wc",
    "grep",
    "id",
    "sleep",
    "touch",
    "mkdir",
    "rm",
    "echo",
    "env",
    "ps",
    "wget",
    "nc",
    // `basho port-forward` relays through nc; a session's processes are ended with kill.
    "kill",
    "httpd",
    "ping",
    "ip",
    "true",
    "false",
    "test",
    "[",
    "awk",
    "sed",
    "sort",
    "uniq",
    "cut",
    "stat",
    "mount",
    "df",
    "du",
    "find",
    "hostname",
    "whoami",
    "printf",
    "cp",
    "mv",
    "ln",
    "chmod",
    "pwd",
    "tee",
    "tr",
    "xargs",
    "date",
    "uname",
    "timeout",
    "seq",
    "basename",
    "dirname",
    "sha256sum",
    "gzip",
    "tar",
    "vi",
    "less",
];

/// A federated job's site step in the demo: counts by ICD-10 code and age band, cells under 10
/// suppressed.
pub const COUNT_CELLS: &str = include_str!("image/count-cells");
/// A federated job's aggregation step in the demo: sums the released partials.
pub const SUM_CELLS: &str = include_str!("image/sum-cells");

/// Fixed modification time of every entry, so the same busybox gives the same layer.
const MTIME: u64 = 1_700_000_000;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";

/// Why the demo image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No busybox to build from.
    #[error(
        "{path} is missing ({source}); the demo image is built from a static busybox: \
         install it with `apt-get install -y busybox-static`"
    )]
    BusyboxMissing {
        /// Where it was looked for.
        path: String,
        /// The read error.
        source: std::io::Error,
    },
    /// The busybox found needs a dynamic loader the image does not have.
    #[error(
        "{path} is not a statically linked executable ({reason}); the demo image has no shared \
         libraries: install `apt-get install -y busybox-static`"
    )]
    BusyboxNotStatic {
        /// Where it was found.
        path: String,
        /// What gave it away.
        reason: String,
    },
    /// Assembling the root filesystem archive failed.
    #[error("cannot assemble the demo root filesystem: {0}")]
    Archive(#[from] std::io::Error),
    /// The engine refused or failed a request.
    #[error("docker engine failed to {what}: {source}; check that dockerd is running")]
    Engine {
        /// The request.
        what: &'static str,
        /// The engine's error.
        source: bollard::errors::Error,
    },
    /// The import finished but the tag does not resolve.
    #[error("imported the demo image but {0} does not resolve to an image ID")]
    NoImageId(String),
}

/// `basho/demo:3`.
pub fn demo_image_ref() -> String {
    format!("{DEMO_IMAGE_NAME}:{DEMO_IMAGE_TAG}")
}

/// Makes sure `basho/demo:3` exists on the engine and returns its image ID (`sha256:...`).
/// Idempotent. Concurrent callers in one process import once; callers in several processes may
/// each import, and all of them then return the ID the tag finally points to.
pub async fn ensure_demo_image(docker: &Docker) -> Result<String, ImageError> {
    static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let reference = demo_image_ref();
    if let Some(id) = image_id(docker, &reference).await? {
        return Ok(id);
    }
    let _guard = BUILDING.lock().await;
    if let Some(id) = image_id(docker, &reference).await? {
        return Ok(id);
    }
    let busybox = read_static_busybox(Path::new(BUSYBOX_PATH)).await?;
    let rootfs = tokio::task::spawn_blocking(move || rootfs_tar(&busybox))
        .await
        .map_err(std::io::Error::other)??;
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(DEMO_IMAGE_NAME)
        .tag(DEMO_IMAGE_TAG)
        .message("basho demo image: static busybox")
        .changes(vec![
            "ENV PATH=/bin".to_string(),
            "WORKDIR /work".to_string(),
            r#"CMD ["/bin/sh"]"#.to_string(),
        ])
        .build();
    let mut progress =
        docker.create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
    while let Some(step) = progress.next().await {
        step.map_err(|source| ImageError::Engine {
            what: "import the demo image",
            source,
        })?;
    }
    tracing::info!(image = %reference, "imported the demo image");
    image_id(docker, &reference)
        .await?
        .ok_or(ImageError::NoImageId(reference))
}

async fn image_id(docker: &Docker, reference: &str) -> Result<Option<String>, ImageError> {
    match docker.inspect_image(reference).await {
        Ok(image) => Ok(image.id),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(source) => Err(ImageError::Engine {
            what: "inspect the demo image",
            source,
        }),
    }
}

/// Reads busybox and refuses a dynamically linked one.
pub async fn read_static_busybox(path: &Path) -> Result<Vec<u8>, ImageError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| ImageError::BusyboxMissing {
            path: path.display().to_string(),
            source,
        })?;
    check_static_elf(&bytes).map_err(|reason| ImageError::BusyboxNotStatic {
        path: path.display().to_string(),
        reason: reason.to_string(),
    })?;
    Ok(bytes)
}

/// An ELF executable without a `PT_INTERP` program header: it needs no dynamic loader.
pub fn check_static_elf(bytes: &[u8]) -> Result<(), &'static str> {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 0x40 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file");
    }
    let little = match bytes[5] {
        1 => true,
        2 => false,
        _ => return Err("unknown ELF byte order"),
    };
    let u16_at = |at: usize| -> Option<u64> {
        let b: [u8; 2] = bytes.get(at..at + 2)?.try_into().ok()?;
        Some(u64::from(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }))
    };
    let u32_at = |at: usize| -> Option<u64> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }))
    };
    let u64_at = |at: usize| -> Option<u64> {
        let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
        Some(if little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let (phoff, phentsize, phnum) = match bytes[4] {
        1 => (u32_at(0x1c), u16_at(0x2a), u16_at(0x2c)),
        2 => (u64_at(0x20), u16_at(0x36), u16_at(0x38)),
        _ => return Err("unknown ELF class"),
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
        return Err("truncated ELF header");
    };
    if phnum == 0 {
        return Err("no program headers: not an executable");
    }
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize).map_err(|_| "bad program header offset")?;
        let p_type = u32_at(at).ok_or("truncated program headers")?;
        if p_type == PT_INTERP as u64 {
            return Err("it names a dynamic loader (PT_INTERP)");
        }
    }
    Ok(())
}

/// The demo root filesystem as an uncompressed tar archive.
pub fn rootfs_tar(busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("etc/basho", 0o755),
        ("root", 0o700),
        ("tmp", 0o1777),
        ("data", 0o755),
        ("work", 0o755),
        ("results", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
    ] {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        tar.append_data(&mut h, format!("{dir}/"), std::io::empty())?;
    }
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    tar.append_data(&mut h, "bin/busybox", busybox)?;
    for applet in APPLETS {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    for (path, text, mode) in [
        ("etc/passwd", PASSWD, 0o644),
        ("etc/group", GROUP, 0o644),
        ("bin/count-cells", COUNT_CELLS, 0o755),
        ("bin/sum-cells", SUM_CELLS, 0o755),
    ] {
        let mut h = header(tar::EntryType::Regular, mode, text.len() as u64);
        tar.append_data(&mut h, path, text.as_bytes())?;
    }
    tar.into_inner()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(archive: &[u8]) -> Vec<(String, tar::EntryType, Option<String>, u32)> {
        let mut a = tar::Archive::new(archive);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                    h.mode().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn rootfs_has_busybox_applets_users_and_mount_points() {
        let archive = rootfs_tar(b"\x7fELF fake").unwrap();
        let all = entries(&archive);
        let find = |p: &str| all.iter().find(|e| e.0.trim_end_matches('/') == p).cloned();
        let bb = find("bin/busybox").expect("busybox");
        assert_eq!((bb.1, bb.3), (tar::EntryType::Regular, 0o755));
        for applet in ["sh", "id", "wget", "nc", "ip", "["] {
            let link = find(&format!("bin/{applet}")).expect(applet);
            assert_eq!(link.1, tar::EntryType::Symlink);
            assert_eq!(link.2.as_deref(), Some("busybox"));
        }
        for dir in [
            "tmp",
            "data",
            "work",
            "results",
            "etc/basho",
            "proc",
            "sys",
            "dev",
        ] {
            assert_eq!(find(dir).expect(dir).1, tar::EntryType::Directory, "{dir}");
        }
        assert_eq!(find("tmp").unwrap().3, 0o1777);
        let mut a = tar::Archive::new(&archive[..]);
        let mut passwd = String::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some("etc/passwd") {
                std::io::Read::read_to_string(&mut e, &mut passwd).unwrap();
            }
        }
        assert!(passwd.contains("root:x:0:0:"));
        assert!(passwd.contains("nobody:x:65534:65534:"));
    }

    #[test]
    fn rootfs_is_reproducible() {
        assert_eq!(rootfs_tar(b"same").unwrap(), rootfs_tar(b"same").unwrap());
    }

    /// A minimal ELF64 little-endian header with one program header of type `p_type`.
    fn elf64(p_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x40 + 0x38];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // little endian
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        b[0x40..0x44].copy_from_slice(&p_type.to_le_bytes());
        b
    }

    #[test]
    fn static_check_spots_a_dynamic_loader() {
        assert!(check_static_elf(&elf64(1)).is_ok());
        assert!(check_static_elf(&elf64(3)).is_err());
        assert!(check_static_elf(b"#!/bin/sh\necho not elf\n").is_err());
        let mut truncated = elf64(1);
        truncated.truncate(0x41);
        assert!(check_static_elf(&truncated).is_err());
    }

    #[test]
    fn host_busybox_passes_when_installed() {
        // Needs busybox-static; the dynamic Debian `busybox` would (rightly) fail here.
        let Ok(bytes) = std::fs::read(BUSYBOX_PATH) else {
            basho_test_util::unavailable(&format!(
                "{BUSYBOX_PATH} missing (apt-get install -y busybox-static)"
            ));
            return;
        };
        assert_eq!(check_static_elf(&bytes), Ok(()));
    }

    #[test]
    fn missing_busybox_says_how_to_install_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = rt
            .block_on(read_static_busybox(Path::new("/nonexistent/busybox")))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("apt-get install -y busybox-static"),
            "{err}"
        );
    }
}
