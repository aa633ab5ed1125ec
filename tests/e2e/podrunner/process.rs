//! Container processes: spawned in a process group of their own with `PR_SET_PDEATHSIG(SIGKILL)`
//! (so they die with the runner, even a SIGKILLed one), output appended to a log file, stopped
//! with SIGTERM and, after the grace period, SIGKILL to the whole group.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// Starts `argv` with exactly `env` (plus nothing inherited), in `cwd`, stdout and stderr appended
/// to `log`. Must be called from the runtime's one thread (see main): the death signal is tied to
/// the thread that forks.
pub fn spawn(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: &Path,
    log: &Path,
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
    // SAFETY: between fork and exec the closure only calls async-signal-safe functions (prctl,
    // getppid, raise) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
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
