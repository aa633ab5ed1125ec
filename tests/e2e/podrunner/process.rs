//! Container processes: spawned in a process group of their own with `PR_SET_PDEATHSIG(SIGKILL)`
//! (so they die with the runner, even a SIGKILLed one), in a memory cgroup holding the container's
//! memory limit (as a kubelet does: the kernel enforces it, and the process reads it from its
//! cgroup), output appended to a log file, stopped with SIGTERM and, after the grace period,
//! SIGKILL to the whole group. A process may be confined to an unpacked image ([`Confinement`]):
//! its own mount namespace with the volumes bind-mounted (read-only where the mount says so), the
//! root filesystem read-only when the security context asks, /proc mounted, chrooted, as the
//! container's user and groups.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// Where the runner's memory cgroups live: cgroup v2 when its root delegates the memory
/// controller, else the v1 memory hierarchy.
fn memory_hierarchy() -> Option<(PathBuf, &'static str)> {
    let v2 = Path::new("/sys/fs/cgroup");
    let controllers =
        std::fs::read_to_string(v2.join("cgroup.subtree_control")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        return Some((v2.join("phoenix-podrunner"), "memory.max"));
    }
    let v1 = v2.join("memory");
    v1.join("memory.limit_in_bytes")
        .is_file()
        .then(|| (v1.join("phoenix-podrunner"), "memory.limit_in_bytes"))
}

/// A container's memory cgroup with its limit set; removed on drop (once its processes are gone).
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
    /// `<dir>/cgroup.procs`, ready for the forked child (no allocation after fork).
    procs: CString,
}

impl MemoryCgroup {
    /// Creates (or reuses) the cgroup `name` with a memory limit of `limit_bytes`.
    pub fn create(name: &str, limit_bytes: u64) -> std::io::Result<MemoryCgroup> {
        let (root, limit_file) = memory_hierarchy()
            .ok_or_else(|| std::io::Error::other("no writable memory cgroup hierarchy"))?;
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(limit_file), limit_bytes.to_string())?;
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(std::io::Error::other)?;
        Ok(MemoryCgroup { dir, procs })
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A memory quantity in bytes (`512Mi`, `2Gi`, `1G`, `128974848`, `1.5Gi`), as Kubernetes writes it.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let value = number.parse::<f64>().ok()? * factor;
    (value.is_finite() && value >= 0.0).then(|| value.ceil() as u64)
}

/// A container's view of the machine, as a runtime sets it up (requires root): the image's root
/// filesystem, volumes bind-mounted into it, a fresh /proc, the standard /dev nodes, the
/// container's user and working directory. No pid or network namespace.
#[derive(Clone, Debug)]
pub struct Confinement {
    pub rootfs: PathBuf,
    pub binds: Vec<Bind>,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the pod's `fsGroup` and `supplementalGroups`).
    pub groups: Vec<u32>,
    /// Absolute path inside the container; empty means `/`.
    pub working_dir: String,
    /// `readOnlyRootFilesystem`: the image's root filesystem is mounted read-only.
    pub read_only_root: bool,
}

/// A volume mount: a file or directory of this machine seen at `path` inside the container.
#[derive(Clone, Debug, PartialEq)]
pub struct Bind {
    pub host: PathBuf,
    /// Absolute path inside the container.
    pub path: String,
    pub read_only: bool,
}

/// The device nodes runc creates in /dev (without the tty): name, major, minor.
const DEVICES: [(&str, u32, u32); 5] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
];

/// Paths prepared before the fork, so the child only makes syscalls.
struct Prepared {
    /// (source, target, read-only).
    binds: Vec<(CString, CString, bool)>,
    proc_dir: CString,
    rootfs: CString,
    read_only_root: bool,
    working_dir: CString,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

impl Confinement {
    /// Creates the mount points, /proc and the /dev nodes in the root filesystem.
    fn prepare(&self) -> std::io::Result<Prepared> {
        let cstring = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|e| std::io::Error::other(e.to_string()))
        };
        let inside = |path: &str| self.rootfs.join(path.trim_start_matches('/'));
        let mut binds = Vec::new();
        for Bind {
            host,
            path,
            read_only,
        } in &self.binds
        {
            let target = inside(path);
            if host.is_dir() {
                std::fs::create_dir_all(&target)?;
            } else {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                OpenOptions::new().create(true).append(true).open(&target)?;
            }
            binds.push((cstring(host)?, cstring(&target)?, *read_only));
        }
        let proc_dir = inside("proc");
        std::fs::create_dir_all(&proc_dir)?;
        let dev = inside("dev");
        std::fs::create_dir_all(&dev)?;
        for (name, major, minor) in DEVICES {
            let node = dev.join(name);
            if node.exists() {
                continue;
            }
            let c_node = cstring(&node)?;
            // SAFETY: c_node is a valid NUL-terminated path that outlives the call.
            let rc = unsafe {
                libc::mknod(
                    c_node.as_ptr(),
                    libc::S_IFCHR | 0o666,
                    libc::makedev(major, minor),
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
        }
        let working_dir = match self.working_dir.as_str() {
            "" => "/",
            dir => dir,
        };
        Ok(Prepared {
            binds,
            proc_dir: cstring(&proc_dir)?,
            rootfs: cstring(&self.rootfs)?,
            read_only_root: self.read_only_root,
            working_dir: cstring(Path::new(working_dir))?,
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.clone(),
        })
    }
}

/// In the forked child: a private mount namespace, the root filesystem bound onto itself (so it
/// can be made read-only), the binds, /proc, chroot, chdir, the user. Only syscalls on memory
/// prepared before the fork.
fn enter(p: &Prepared) -> std::io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: every pointer is a NUL-terminated string owned by `p` or null where allowed; these
    // are plain syscalls, async-signal-safe between fork and exec.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        let bind = |source: &CString, target: &CString, read_only: bool| -> std::io::Result<()> {
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            if read_only {
                check(libc::mount(
                    none,
                    target.as_ptr(),
                    none,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                    std::ptr::null(),
                ))?;
            }
            Ok(())
        };
        bind(&p.rootfs, &p.rootfs, p.read_only_root)?;
        for (source, target, read_only) in &p.binds {
            bind(source, target, *read_only)?;
        }
        check(libc::mount(
            c"proc".as_ptr(),
            p.proc_dir.as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))?;
        check(libc::chroot(p.rootfs.as_ptr()))?;
        check(libc::chdir(p.working_dir.as_ptr()))?;
        check(libc::setgroups(p.groups.len(), p.groups.as_ptr()))?;
        check(libc::setgid(p.gid))?;
        check(libc::setuid(p.uid))?;
    }
    Ok(())
}

/// Starts `argv` with exactly `env` (plus nothing inherited), in `cwd`, stdout and stderr appended
/// to `log`, inside `cgroup` when given. Must be called from the runtime's one thread (see main):
/// the death signal is tied to the thread that forks. With a `confinement` (an image), `cwd` is
/// ignored (the confinement has the working directory) and `argv[0]` is looked up on the `PATH`
/// in `env`, inside the image.
pub fn spawn_confined(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: &Path,
    log: &Path,
    cgroup: Option<&MemoryCgroup>,
    confinement: Option<&Confinement>,
) -> std::io::Result<Child> {
    let prepared = confinement.map(Confinement::prepare).transpose()?;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command line"))?;
    let mut out = OpenOptions::new().create(true).append(true).open(log)?;
    writeln!(
        out,
        "==== phoenix-e2e-podrunner: {} starting: {}",
        k8s_openapi::jiff::Timestamp::now(),
        shell_words(argv)
    )?;
    let err = out.try_clone()?;
    let parent = std::process::id();
    let procs = cgroup.map(|c| c.procs.clone());
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().envs(env);
    if prepared.is_none() {
        cmd.current_dir(cwd);
    }
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: between fork and exec the closure only calls async-signal-safe functions (open,
    // write, close, prctl, getppid, raise, and in `enter` unshare, mount, chroot, chdir,
    // setgroups, setgid, setuid) and allocates nothing (the paths were built before).
    unsafe {
        cmd.pre_exec(move || {
            if let Some(procs) = &procs {
                // "0" moves the writing process: the child joins the cgroup before it execs.
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The runner may have died before prctl: then nobody would ever send the signal.
            if libc::getppid() as u32 != parent {
                libc::raise(libc::SIGKILL);
            }
            match &prepared {
                Some(p) => enter(p),
                None => Ok(()),
            }
        });
    }
    cmd.spawn()
}

/// Sends SIGTERM to the process (not its group: a supervisor such as the simulator stops its own
/// workers). No-op once it has been reaped.
pub fn terminate(child: &Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill only sends a signal; the pid is our unreaped child, so it is not reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

/// SIGKILL to the process's whole group (it leads it). No-op once it has been reaped.
pub fn kill_group(child: &Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: as above; the group id is the unreaped leader's pid.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

/// SIGTERM, then SIGKILL to the group when `grace` has passed; returns the exit status.
pub async fn stop(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    terminate(child);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::warn!(pid = ?child.id(), ?grace, "still running after the grace period: SIGKILL");
            kill_group(child);
            child.wait().await.ok()
        }
    }
}

/// A command line as a shell would need it, for logs.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `target/images/<name>.tar` unpacked into a fresh directory; `None` (skipped, said so) when
    /// the archive is missing and `PHOENIX_REQUIRE_IMAGES` is unset, or when not root.
    fn unpacked_image(name: &str) -> Option<(PathBuf, crate::oci::ImageConfig)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
        let archive = root.join("target/images").join(format!("{name}.tar"));
        if !archive.is_file() {
            assert!(
                std::env::var_os("PHOENIX_REQUIRE_IMAGES").is_none(),
                "{} missing: run `just images`",
                archive.display()
            );
            eprintln!("skipped: {} not built", archive.display());
            return None;
        }
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } != 0 {
            eprintln!("skipped: confining a process needs root");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("podrunner-confined-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = crate::oci::unpack(&archive, &dir.join("rootfs"), &dir.join("scratch"))
            .expect("unpack the image");
        Some((dir, config))
    }

    /// Runs the image's entrypoint with `args`, confined, a host directory bind-mounted at /tmp;
    /// returns the exit status, the log and how many entries the bound /tmp holds at the end.
    /// The unpacked image is removed.
    async fn run_confined(name: &str, args: &[&str]) -> Option<(ExitStatus, String, usize)> {
        let (dir, config) = unpacked_image(name)?;
        // An emptyDir as the kubelet makes it: mode 0777, so any container user can write.
        let tmp = dir.join("volumes/tmp");
        std::fs::create_dir_all(&tmp).expect("mkdir");
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let argv = crate::oci::argv(&config, None, Some(&args));
        let env = crate::oci::env(&config, &BTreeMap::new());
        let (uid, gid) = crate::oci::user(
            &config.user,
            crate::oci::UserOverride {
                run_as_user: Some(10001),
                run_as_non_root: true,
                ..Default::default()
            },
            "",
            "",
        )
        .expect("user");
        let confinement = Confinement {
            rootfs: dir.join("rootfs"),
            binds: vec![Bind {
                host: tmp.clone(),
                path: "/tmp".into(),
                read_only: false,
            }],
            uid,
            gid,
            groups: vec![],
            working_dir: config.working_dir.clone(),
            // As the chart and the Job builder ask: only the volumes are writable.
            read_only_root: true,
        };
        let log = dir.join("log");
        let mut child =
            spawn_confined(&argv, &env, &dir, &log, None, Some(&confinement)).expect("spawn");
        let status = child.wait().await.expect("wait");
        let text = std::fs::read_to_string(&log).expect("read log");
        let tmp_entries = std::fs::read_dir(&tmp).expect("read tmp").count();
        let _ = std::fs::remove_dir_all(&dir);
        Some((status, text, tmp_entries))
    }

    #[tokio::test]
    async fn operator_runs_confined_in_its_image() {
        if let Some((status, log, _)) = run_confined("phoenix-operator", &["--version"]).await {
            assert!(status.success(), "{log}");
            assert!(log.contains("phoenix-operator 0.1.0"), "{log}");
        }
    }

    /// The simulator in its image, as its Job runs it (user 10001, an emptyDir at /tmp): it
    /// re-executes itself through name symlinks in /tmp, which land in the bound host directory.
    #[tokio::test]
    async fn simulator_runs_confined_with_tmp_bound() {
        let args = [
            "--processes",
            "2",
            "--critical",
            "postgres",
            "--duration",
            "2s",
            "--seed",
            "3",
        ];
        if let Some((status, log, tmp)) = run_confined("phoenix-simulator", &args).await {
            assert!(status.success(), "{log}");
            assert!(!log.contains("cannot create"), "{log}");
            assert!(log.contains(r#""outcome":"completed""#), "{log}");
            assert!(log.contains(r#""spawnFailuresTotal":0"#), "{log}");
            // Its link directory came and went in the bound directory (removed at exit).
            assert_eq!(tmp, 0, "entries left in the bound /tmp");
        }
    }

    #[test]
    fn memory_quantities_as_kubernetes_writes_them() {
        assert_eq!(quantity_bytes("512Mi"), Some(512 << 20));
        assert_eq!(quantity_bytes("2Gi"), Some(2 << 30));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("128974848"), Some(128_974_848));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("12 parsecs"), None);
    }

    #[test]
    fn shell_words_quote_what_needs_it() {
        let argv = [
            "/bin/x".to_string(),
            "--a=b".into(),
            "{\"k\": 1}".into(),
            "it's".into(),
        ];
        assert_eq!(shell_words(&argv), r#"/bin/x --a=b '{"k": 1}' 'it'\''s'"#);
    }
}
