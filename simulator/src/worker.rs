//! Worker mode: one simulated process. The supervisor re-executes its own binary as
//! `<name> worker --supervisor-pid <pid> --spec <json>`; the worker ties its life to the
//! supervisor's (`PR_SET_PDEATHSIG` = `SIGKILL`, then checks it was not orphaned already), names
//! itself (`PR_SET_NAME`), and burns CPU and holds touched memory per its [`WorkerSpec`] until its
//! lifetime ends. It runs no async runtime and starts no thread: one small, plain process.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::load::{CpuLoad, MemoryLoad};
use super::plan::duration_ms;

/// Memory is held in chunks of this size, each its own anonymous mapping, so shrinking really
/// returns memory to the kernel (no allocator heuristics in the way).
pub const CHUNK_KIB: u32 = 256;
const CHUNK_BYTES: usize = CHUNK_KIB as usize * 1024;
/// Writing one byte every 4 KiB touches every page whatever the page size (4, 16 or 64 KiB).
const TOUCH_STRIDE: usize = 4096;

/// What one worker does; the supervisor passes it as JSON in `--spec`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// The process name (already set by the supervisor as `argv[0]` and the executable's name).
    pub name: String,
    /// How long to live before exiting on its own.
    pub lifetime_ms: u64,
    /// Seed of random levels and spike phases.
    pub seed: u64,
    pub cpu: CpuLoad,
    pub memory: MemoryLoad,
}

/// Runs the worker until its lifetime ends or the supervisor is gone.
pub fn run(spec: &WorkerSpec, supervisor_pid: u32) {
    if !bind_to_supervisor(supervisor_pid) {
        return;
    }
    set_process_name(&spec.name);
    let mut ballast = Ballast::default();
    let lifetime = Duration::from_millis(spec.lifetime_ms);
    let start = Instant::now();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= lifetime || std::os::unix::process::parent_id() != supervisor_pid {
            return;
        }
        let t = duration_ms(elapsed);
        ballast.resize_kib(spec.memory.kib_at(t, spec.lifetime_ms, spec.seed));
        let millicores = spec.cpu.millicores_at(t, spec.lifetime_ms, spec.seed);
        let slice = slice_for(millicores).min(lifetime - elapsed);
        let busy = busy_share(slice, millicores);
        spin(busy);
        std::thread::sleep(slice.saturating_sub(busy));
    }
}

/// Length of one duty cycle: short for busy processes (smooth CPU), long for nearly idle ones (so
/// thousands of them do not wake the machine up hundreds of thousands of times a second).
pub fn slice_for(millicores: u32) -> Duration {
    if millicores >= 50 {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    }
}

/// The busy part of a slice for a target in millicores (1000 = the whole slice).
pub fn busy_share(slice: Duration, millicores: u32) -> Duration {
    slice.mul_f64(f64::from(millicores.min(1000)) / 1000.0)
}

/// Burns CPU in user space for `busy`.
fn spin(busy: Duration) {
    let until = Instant::now() + busy;
    let mut x: u64 = 1;
    while Instant::now() < until {
        for _ in 0..256 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    std::hint::black_box(x);
}

/// Asks the kernel to `SIGKILL` this process when the thread that spawned it (the supervisor's
/// main thread) dies, then checks the supervisor did not die before that took effect.
fn bind_to_supervisor(supervisor_pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let signal = libc::SIGKILL as libc::c_ulong;
        // SAFETY: PR_SET_PDEATHSIG takes a signal number by value and touches no memory.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) } != 0 {
            eprintln!(
                "phoenix-simulator worker: PR_SET_PDEATHSIG failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    std::os::unix::process::parent_id() == supervisor_pid
}

/// Sets the kernel's name for this process (`comm`, cut to 15 bytes). The supervisor already
/// executed us under that name; this covers the fallback where it could not.
fn set_process_name(name: &str) {
    #[cfg(target_os = "linux")]
    {
        let mut buf = [0u8; 16];
        let bytes = name.as_bytes();
        let len = bytes.len().min(15);
        buf[..len].copy_from_slice(&bytes[..len]);
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes; `buf` is 16
        // bytes, ends with NUL and outlives the call.
        unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

/// Resident memory held on purpose: a list of touched anonymous mappings of [`CHUNK_KIB`] each.
#[derive(Debug, Default)]
pub struct Ballast {
    chunks: Vec<Chunk>,
}

impl Ballast {
    /// Grows or shrinks to `kib` rounded down to whole chunks. Stops growing quietly when the
    /// kernel refuses more memory.
    pub fn resize_kib(&mut self, kib: u32) {
        let want = (kib / CHUNK_KIB) as usize;
        self.chunks.truncate(want);
        while self.chunks.len() < want {
            match Chunk::new() {
                Some(chunk) => self.chunks.push(chunk),
                None => break,
            }
        }
    }

    /// KiB currently held.
    pub fn kib(&self) -> u32 {
        u32::try_from(self.chunks.len())
            .unwrap_or(u32::MAX)
            .saturating_mul(CHUNK_KIB)
    }
}

/// One private anonymous mapping of `CHUNK_BYTES`, every page written once; unmapped on drop.
#[derive(Debug)]
struct Chunk(NonNull<u8>);

impl Chunk {
    fn new() -> Option<Chunk> {
        // SAFETY: a fresh private anonymous mapping aliases nothing; the result is checked
        // against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CHUNK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let base = NonNull::new(ptr.cast::<u8>())?;
        for offset in (0..CHUNK_BYTES).step_by(TOUCH_STRIDE) {
            // SAFETY: `offset < CHUNK_BYTES`, inside the writable mapping created above.
            unsafe { base.as_ptr().add(offset).write_volatile(0xA5) };
        }
        Some(Chunk(base))
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: the pointer and length are exactly those of the mapping made in `Chunk::new`,
        // which nothing else references.
        unsafe { libc::munmap(self.0.as_ptr().cast(), CHUNK_BYTES) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadPattern;

    fn vm_rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn ballast_grows_and_shrinks_resident_memory() {
        let mut ballast = Ballast::default();
        let before = vm_rss_kib();
        ballast.resize_kib(32 * 1024);
        assert_eq!(ballast.kib(), 32 * 1024);
        let grown = vm_rss_kib();
        // Other tests run in this process too: only check that most of it became resident.
        assert!(grown >= before + 24 * 1024, "{before} → {grown} KiB");
        ballast.resize_kib(1000);
        assert_eq!(ballast.kib(), 768, "rounded down to whole chunks");
        ballast.resize_kib(0);
        assert_eq!(ballast.kib(), 0);
    }

    #[test]
    fn duty_cycle_follows_the_target() {
        assert_eq!(slice_for(10), Duration::from_secs(1));
        assert_eq!(slice_for(500), Duration::from_millis(200));
        assert_eq!(
            busy_share(Duration::from_secs(1), 250),
            Duration::from_millis(250)
        );
        assert_eq!(
            busy_share(Duration::from_millis(200), 5_000),
            Duration::from_millis(200)
        );
        assert_eq!(busy_share(Duration::from_secs(1), 0), Duration::ZERO);
    }

    #[test]
    fn spec_is_plain_camel_case_json() {
        let spec = WorkerSpec {
            name: "svc-a7f3-0042".into(),
            lifetime_ms: 20_000,
            seed: 3,
            cpu: CpuLoad {
                pattern: LoadPattern::Spiky,
                peak_millicores: 40,
            },
            memory: MemoryLoad {
                pattern: LoadPattern::Growing,
                peak_kib: 4096,
            },
        };
        let json = serde_json::to_string(&spec).expect("serializable");
        assert_eq!(
            json,
            r#"{"name":"svc-a7f3-0042","lifetimeMs":20000,"seed":3,"cpu":{"pattern":"spiky","peakMillicores":40},"memory":{"pattern":"growing","peakKib":4096}}"#
        );
        assert_eq!(serde_json::from_str::<WorkerSpec>(&json).ok(), Some(spec));
    }
}
