//! The OCI image archives `just images` writes (target/images/<name>.tar, scripts/images.sh): each
//! is a valid OCI layout whose one image runs its static binary as a non-root user, holds no shell
//! or any other executable, and is labelled and annotated with the package version and the git
//! revision it was built from.
//!
//! The binaries also run from the image alone: the layers unpacked into a root filesystem, as the
//! image's user, chrooted with only /proc and the /dev nodes a container runtime adds — the operator
//! prints its version, and the simulator runs a short simulation whose workers it re-executes
//! through name symlinks in the image's /tmp.
//!
//! Building images is slow, so these tests need the archives only when `PHOENIX_REQUIRE_IMAGES` is
//! set (`just images` sets it after building): then a missing archive fails. Without it they say
//! they skipped. Running chrooted needs root; without it that part says it skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

const REGISTRY: &str = "ghcr.io/phoenix-operator";
const SOURCE_URL: &str = "https://github.com/phoenix-operator/phoenix";
const USER: &str = "65532:65532";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The archive of `name`, or `None` (skip) when it is absent and not required.
fn archive(name: &str) -> Option<PathBuf> {
    let path = root().join("target/images").join(format!("{name}.tar"));
    let required = std::env::var_os("PHOENIX_REQUIRE_IMAGES").is_some_and(|v| !v.is_empty());
    match (path.is_file(), required) {
        (true, _) => Some(path),
        (false, true) => panic!(
            "{} is missing but PHOENIX_REQUIRE_IMAGES is set: run `just images`",
            path.display()
        ),
        (false, false) => {
            eprintln!(
                "skipped: {} not built (`just images` builds it and runs these tests)",
                path.display()
            );
            None
        }
    }
}

/// Runs `tar` with `args` and returns its stdout.
fn tar(args: &[&str]) -> Vec<u8> {
    let out = Command::new("tar").args(args).output().expect("run tar");
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One file of an OCI archive, read without unpacking the rest.
fn member(archive: &Path, path: &str) -> Vec<u8> {
    tar(&["-xOf", &archive.to_string_lossy(), path])
}

fn json(archive: &Path, path: &str) -> Value {
    serde_json::from_slice(&member(archive, path))
        .unwrap_or_else(|e| panic!("{path} in {} is not JSON: {e}", archive.display()))
}

/// The blob path of a descriptor (`blobs/sha256/<hex>`).
fn blob_path(descriptor: &Value) -> String {
    let digest = descriptor["digest"]
        .as_str()
        .expect("descriptor has a digest");
    let (algorithm, hex) = digest.split_once(':').expect("digest is algorithm:hex");
    format!("blobs/{algorithm}/{hex}")
}

/// An entry of a layer listing: permissions (`drwxrwxrwt`), numeric owner (`0/0`) and path.
#[derive(Debug)]
struct Entry {
    mode: String,
    owner: String,
    path: String,
}

/// Parses `tar -tv --numeric-owner` lines: `<mode> <uid>/<gid> <size> <date> <time> <path>`
/// (columns padded with spaces; a symlink's path is followed by ` -> <target>`).
fn parse_listing(listing: &str) -> Vec<Entry> {
    listing
        .lines()
        .filter_map(|line| {
            let mut fields = Vec::with_capacity(5);
            let mut rest = line;
            for _ in 0..5 {
                let field = rest.trim_start();
                let end = field.find(char::is_whitespace)?;
                fields.push(&field[..end]);
                rest = &field[end..];
            }
            let path = rest.trim_start();
            let path = path.split(" -> ").next().unwrap_or(path);
            Some(Entry {
                mode: fields[0].to_string(),
                owner: fields[1].to_string(),
                path: path
                    .trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string(),
            })
        })
        .collect()
}

/// Whether an ELF image asks for a program interpreter (PT_INTERP), i.e. is dynamically linked.
/// `None` when `elf` is not a 64-bit little-endian ELF file.
fn has_interpreter(elf: &[u8]) -> Option<bool> {
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    let mut interp = false;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?);
        interp |= p_type == 3;
    }
    Some(interp)
}

/// What one image archive holds.
struct Image {
    index: Value,
    manifest: Value,
    config: Value,
    /// Every layer's entries, path → entry (later layers win).
    files: BTreeMap<String, Entry>,
    /// The entrypoint binary's bytes, from the layer that holds it.
    binary: Vec<u8>,
}

fn load(archive: &Path, binary_path: &str) -> Image {
    let file = archive.to_string_lossy();
    let layout = json(archive, "oci-layout");
    assert_eq!(layout["imageLayoutVersion"], "1.0.0", "oci-layout");
    let index = json(archive, "index.json");
    let manifests = index["manifests"]
        .as_array()
        .expect("index.json lists manifests");
    assert_eq!(manifests.len(), 1, "one image per archive: {index}");
    let manifest = json(archive, &blob_path(&manifests[0]));
    let config = json(archive, &blob_path(&manifest["config"]));
    let dir = tempdir(archive);
    let mut files = BTreeMap::new();
    let mut binary = Vec::new();
    for layer in manifest["layers"]
        .as_array()
        .expect("manifest lists layers")
    {
        let media_type = layer["mediaType"].as_str().unwrap_or_default();
        assert!(
            media_type.starts_with("application/vnd.oci.image.layer.v1.tar"),
            "layer media type {media_type}"
        );
        let blob = blob_path(layer);
        tar(&["-xf", &file, "-C", &dir.to_string_lossy(), &blob]);
        let layer_file = dir.join(&blob).to_string_lossy().into_owned();
        let listing = tar(&["-tvf", &layer_file, "--numeric-owner"]);
        for entry in parse_listing(&String::from_utf8_lossy(&listing)) {
            if entry.path == binary_path {
                binary = tar(&["-xOf", &layer_file, &entry.path]);
            }
            files.insert(entry.path.clone(), entry);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Image {
        index,
        manifest,
        config,
        files,
        binary,
    }
}

/// The image's root filesystem: every layer unpacked in order into a fresh directory (our images
/// delete nothing, so there are no whiteouts to apply), plus the /proc mount point a runtime makes.
fn unpack(archive: &Path, image: &Image) -> PathBuf {
    assert!(
        !image.files.keys().any(|p| p.contains(".wh.")),
        "whiteouts would need applying"
    );
    let blobs = tempdir(archive);
    let rootfs = blobs.join("rootfs");
    std::fs::create_dir_all(rootfs.join("proc")).expect("create rootfs");
    for layer in image.manifest["layers"].as_array().expect("layers") {
        let blob = blob_path(layer);
        tar(&[
            "-xf",
            &archive.to_string_lossy(),
            "-C",
            &blobs.to_string_lossy(),
            &blob,
        ]);
        tar(&[
            "-xf",
            &blobs.join(&blob).to_string_lossy(),
            "-C",
            &rootfs.to_string_lossy(),
            "--numeric-owner",
            "--same-permissions",
        ]);
    }
    rootfs
}

/// The device nodes every container runtime creates in /dev (runc's defaults, without the tty).
const DEVICES: [(&str, u32, u32); 5] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
];

/// Makes /dev/{null,zero,full,random,urandom} in `rootfs`, mode 0666, as a runtime does.
fn make_devices(rootfs: &Path) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let dev = rootfs.join("dev");
    std::fs::create_dir_all(&dev).expect("create /dev");
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
        // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mknod(
                c_path.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            )
        };
        assert_eq!(
            rc,
            0,
            "mknod {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    }
}

/// Runs `argv` in `rootfs` as the image's user the way a runtime would: new mount and pid
/// namespaces with /proc mounted, the standard /dev nodes, chrooted, with only the image's
/// environment. `None` (skipped) when not root.
fn run_in_image(image: &Image, rootfs: &Path, argv: &[&str]) -> Option<std::process::Output> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped running {argv:?} chrooted: needs root");
        return None;
    }
    make_devices(rootfs);
    let run = &image.config["config"];
    // Host programs by absolute path: the environment below is the image's.
    let mut cmd = Command::new(host_program("unshare"));
    cmd.arg("--mount")
        .arg("--pid")
        .arg("--fork")
        .arg(format!("--mount-proc={}", rootfs.join("proc").display()))
        .arg(host_program("chroot"))
        .arg(format!(
            "--userspec={}",
            run["User"].as_str().unwrap_or_default()
        ))
        .arg(rootfs)
        .args(argv)
        .env_clear();
    for kv in run["Env"].as_array().into_iter().flatten() {
        if let Some((k, v)) = kv.as_str().and_then(|kv| kv.split_once('=')) {
            cmd.env(k, v);
        }
    }
    Some(cmd.output().expect("run unshare + chroot"))
}

/// `name` found on this process's PATH (util-linux `unshare`, coreutils `chroot`).
fn host_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found on PATH"))
}

/// A fresh directory per call (tests run in parallel threads of one process).
fn tempdir(archive: &Path) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let stem = archive.file_stem().unwrap_or_default().to_string_lossy();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("phoenix-images-{stem}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// The commit `revision` names exists in this repository (a `-dirty` suffix allowed).
fn is_known_commit(revision: &str) -> bool {
    let commit = revision.strip_suffix("-dirty").unwrap_or(revision);
    commit.len() == 40
        && Command::new("git")
            .args(["-C", &root().to_string_lossy(), "cat-file", "-e"])
            .arg(format!("{commit}^{{commit}}"))
            .status()
            .is_ok_and(|s| s.success())
}

/// Checks what every image must be; returns it for image-specific checks (`None`: skipped).
fn check_image(name: &str) -> Option<Image> {
    let archive = archive(name)?;
    let entrypoint = format!("usr/local/bin/{name}");
    let image = load(&archive, &entrypoint);
    let version = env!("CARGO_PKG_VERSION");
    let reference = format!("{REGISTRY}/{name}:{version}");

    let descriptor = &image.index["manifests"][0];
    assert_eq!(
        descriptor["annotations"]["org.opencontainers.image.ref.name"], reference,
        "index.json names the image"
    );
    assert_eq!(
        image.manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(image.config["os"], "linux");
    assert_eq!(image.config["architecture"], "amd64");

    let run = &image.config["config"];
    assert_eq!(run["User"], USER, "non-root numeric user");
    assert_eq!(
        run["Entrypoint"],
        serde_json::json!([format!("/{entrypoint}")]),
        "entrypoint"
    );
    assert!(run["Cmd"].is_null(), "no default arguments: {}", run["Cmd"]);

    for (what, meta) in [
        ("config labels", &run["Labels"]),
        ("manifest annotations", &image.manifest["annotations"]),
    ] {
        assert_eq!(meta["org.opencontainers.image.version"], version, "{what}");
        assert_eq!(
            meta["org.opencontainers.image.source"], SOURCE_URL,
            "{what}"
        );
        assert_eq!(meta["org.opencontainers.image.title"], name, "{what}");
        let revision = meta["org.opencontainers.image.revision"]
            .as_str()
            .unwrap_or_default();
        assert!(
            is_known_commit(revision),
            "{what}: revision {revision:?} is not a commit of this repository"
        );
    }

    // Only the one binary is executable: no shell, no busybox, no package manager.
    let executables: Vec<&str> = image
        .files
        .values()
        .filter(|e| e.mode.starts_with('-') && e.mode.contains('x'))
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(executables, vec![entrypoint.as_str()], "executables");
    assert!(
        !image
            .files
            .keys()
            .any(|p| p == "bin" || p.starts_with("bin/")),
        "no /bin"
    );
    let bin = &image.files[&entrypoint];
    assert_eq!(
        (bin.mode.as_str(), bin.owner.as_str()),
        ("-rwxr-xr-x", "0/0"),
        "binary owned by root, not writable by the user"
    );
    assert_eq!(
        has_interpreter(&image.binary),
        Some(false),
        "{entrypoint} is a static ELF executable"
    );
    let tmp = image.files.get("tmp").expect("/tmp exists");
    assert_eq!(tmp.mode, "drwxrwxrwt", "/tmp is world-writable and sticky");
    let passwd = image.files.get("etc/passwd").expect("/etc/passwd exists");
    assert!(passwd.mode.starts_with("-rw-r--r--"), "{passwd:?}");
    Some(image)
}

#[test]
fn operator_image_archive() {
    if let Some(image) = check_image("phoenix-operator") {
        assert!(
            image
                .files
                .contains_key("etc/ssl/certs/ca-certificates.crt"),
            "the operator image carries a CA bundle for an HTTPS Prometheus"
        );
        assert_eq!(
            image.config["config"]["ExposedPorts"],
            serde_json::json!({"8080/tcp": {}})
        );
    }
}

#[test]
fn simulator_image_archive() {
    check_image("phoenix-simulator");
}

/// Runs `argv` from the unpacked image `name` ([`run_in_image`]); `None` when skipped.
fn run_from_image(name: &str, argv: &[&str]) -> Option<std::process::Output> {
    let archive = archive(name)?;
    let image = load(&archive, "");
    let rootfs = unpack(&archive, &image);
    let out = run_in_image(&image, &rootfs, argv);
    let _ = std::fs::remove_dir_all(rootfs.parent().unwrap_or(&rootfs));
    out
}

#[test]
fn operator_runs_from_its_image_alone() {
    if let Some(out) = run_from_image("phoenix-operator", &["phoenix-operator", "--version"]) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("phoenix-operator {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn simulator_runs_and_names_its_workers_from_its_image_alone() {
    // The Job's command is `phoenix-simulator`, found on the image's PATH.
    let argv = [
        "phoenix-simulator",
        "--profile",
        "realistic",
        "--processes",
        "3",
        "--critical",
        "postgres",
        "--duration",
        "3s",
        "--seed",
        "1",
    ];
    if let Some(out) = run_from_image("phoenix-simulator", &argv) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
        assert!(
            !stderr.contains("cannot create"),
            "the worker-name symlinks could not be made in the image's /tmp: {stderr}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("final JSON line: {e}: {stdout}"));
        assert_eq!(summary["outcome"], "completed", "{summary}");
        assert!(summary["spawnedTotal"].as_u64() >= Some(4), "{summary}");
        assert_eq!(summary["spawnFailuresTotal"], 0, "{summary}");
    }
}

#[test]
fn elf_interpreter_detection() {
    let exe = std::fs::read(std::env::current_exe().expect("test binary path")).expect("read it");
    let dynamic = has_interpreter(&exe).expect("the test binary is ELF64");
    let ldd = Command::new("ldd")
        .arg(std::env::current_exe().expect("path"))
        .output();
    if let Ok(out) = ldd {
        let is_static = String::from_utf8_lossy(&out.stdout).contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable");
        assert_eq!(dynamic, !is_static, "PT_INTERP agrees with ldd");
    }
    assert_eq!(has_interpreter(b"#!/bin/sh\n"), None);
}

#[test]
fn listing_lines_parse() {
    let entries = parse_listing(
        "drwxrwxrwt 0/0               0 2026-11-29 10:00 tmp/\n\
         -rwxr-xr-x 0/0        12345678 2026-11-29 10:00 usr/local/bin/phoenix-operator\n\
         lrwxrwxrwx 0/0               0 2026-11-29 10:00 ./a b -> c\n",
    );
    let got: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.mode.as_str(), e.owner.as_str(), e.path.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("drwxrwxrwt", "0/0", "tmp"),
            ("-rwxr-xr-x", "0/0", "usr/local/bin/phoenix-operator"),
            ("lrwxrwxrwx", "0/0", "a b"),
        ]
    );
}
