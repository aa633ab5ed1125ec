//! The formats /metrics serves: OpenMetrics to scrapers that ask for it (Prometheus does), the
//! classic Prometheus text format 0.0.4 to everything else (curl, `promtool check metrics`), as
//! the Go client library negotiates.

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an HTTP request (its raw head) accepts OpenMetrics.
pub fn wants_openmetrics(request_head: &str) -> bool {
    request_head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value.contains("application/openmetrics-text")
        })
    })
}

/// The classic text format of an OpenMetrics exposition: counter families are named with their
/// `_total` suffix, `info` families become gauges named `_info`, unknown types `untyped`; `# UNIT`
/// and `# EOF` lines go. Sample lines are the same in both formats.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // OpenMetrics writes HELP before TYPE; a HELP waits here until its family's name is known.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take());
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = classic_family(family, kind);
            match help.take() {
                Some((helped, text)) if helped == family => {
                    out.push_str(&format!("# HELP {name} {text}\n"));
                }
                other => flush_help(&mut out, other),
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        } else {
            flush_help(&mut out, help.take());
            out.push_str(line);
            out.push('\n');
        }
    }
    flush_help(&mut out, help);
    out
}

/// The classic family name and type of an OpenMetrics family.
fn classic_family(family: &str, kind: &str) -> (String, &'static str) {
    match kind {
        "counter" => (format!("{family}_total"), "counter"),
        "info" => (format!("{family}_info"), "gauge"),
        "gauge" => (family.to_string(), "gauge"),
        "histogram" => (family.to_string(), "histogram"),
        "summary" => (family.to_string(), "summary"),
        _ => (family.to_string(), "untyped"),
    }
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>) {
    if let Some((name, text)) = help {
        out.push_str(&format!("# HELP {name} {text}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_total_name_and_eof_goes() {
        let om = "# HELP phoenix_reconciles Reconciles per controller.\n\
                  # TYPE phoenix_reconciles counter\n\
                  phoenix_reconciles_total{controller=\"pipeline\"} 3\n\
                  # HELP phoenix_up Up.\n\
                  # TYPE phoenix_up gauge\n\
                  # UNIT phoenix_up ratio\n\
                  phoenix_up 1\n\
                  # HELP phoenix_build Build.\n\
                  # TYPE phoenix_build info\n\
                  phoenix_build_info{version=\"1\"} 1\n\
                  # EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP phoenix_reconciles_total Reconciles per controller.\n\
             # TYPE phoenix_reconciles_total counter\n\
             phoenix_reconciles_total{controller=\"pipeline\"} 3\n\
             # HELP phoenix_up Up.\n\
             # TYPE phoenix_up gauge\n\
             phoenix_up 1\n\
             # HELP phoenix_build_info Build.\n\
             # TYPE phoenix_build_info gauge\n\
             phoenix_build_info{version=\"1\"} 1\n"
        );
    }

    #[test]
    fn openmetrics_only_when_the_scraper_accepts_it() {
        let prometheus = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n";
        let curl = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        assert!(wants_openmetrics(prometheus));
        assert!(!wants_openmetrics(curl));
        assert!(!wants_openmetrics("GET /metrics HTTP/1.1\r\n\r\n"));
    }
}
