//! Container processes: spawned in a process group of their own with `PR_SET_PDEATHSIG(SIGKILL)`
//! (so they die with the runner, even a SIGKILLed one), in a memory cgroup holding the container's
//! memory limit (as a kubelet does: the kernel enforces it, and the process reads it from its
//! cgroup), output appended to a log file, stopped with SIGTERM and, after the grace period,
//! SIGKILL to the whole group.

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

/// Starts `argv` with exactly `env` (plus nothing inherited), in `cwd`, stdout and stderr appended
/// to `log`, inside `cgroup` when given. Must be called from the runtime's one thread (see main):
/// the death signal is tied to the thread that forks.
pub fn spawn(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: &Path,
    log: &Path,
    cgroup: Option<&MemoryCgroup>,
) -> std::io::Result<Child> {
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
    cmd.args(args)
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: between fork and exec the closure only calls async-signal-safe functions (open,
    // write, close, prctl, getppid, raise) and allocates nothing (the path was built before).
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
            Ok(())
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
