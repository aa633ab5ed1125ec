//! The operator process's own resident memory, read from /proc at scrape time
//! (`phoenix_process_resident_memory_bytes`; 0 families where /proc is missing).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

/// Exports the resident set size of this process.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// Resident bytes from the text of /proc/self/statm (second field, pages) and the page size.
pub fn resident_bytes(statm: &str, page_size: u64) -> Option<u64> {
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page_size)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // SAFETY: sysconf only reads a system constant.
        let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let Some(bytes) = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|statm| resident_bytes(&statm, page_size))
        else {
            return Ok(());
        };
        let gauge = ConstGauge::new(bytes as i64);
        let metric = encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory of the operator process",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_pages_times_page_size() {
        assert_eq!(
            resident_bytes("5000 1200 300 10 0 900 0\n", 4096),
            Some(1200 * 4096)
        );
        assert_eq!(resident_bytes("garbage", 4096), None);
    }
}
