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
    classic_pieces(openmetrics, openmetrics.len()).collect()
}

/// [`to_prometheus_text`] line by line, so a large exposition can be converted (and sent) in
/// pieces instead of as a second copy.
#[derive(Default)]
struct Classic<'a> {
    /// OpenMetrics writes HELP before TYPE; a HELP waits here until its family's name is known.
    help: Option<(&'a str, &'a str)>,
}

impl<'a> Classic<'a> {
    /// Appends the classic form of the OpenMetrics line `line` (without its newline) to `out`.
    fn line(&mut self, line: &'a str, out: &mut String) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(out, self.help.take());
            self.help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = classic_family(family, kind);
            match self.help.take() {
                Some((helped, text)) if helped == family => {
                    out.push_str(&format!("# HELP {name} {text}\n"));
                }
                other => flush_help(out, other),
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line != "# EOF" && !line.starts_with("# UNIT ") {
            flush_help(out, self.help.take());
            out.push_str(line);
            out.push('\n');
        }
    }

    /// Appends what is still held back (a HELP whose TYPE never came) to `out`.
    fn finish(&mut self, out: &mut String) {
        flush_help(out, self.help.take());
    }
}

/// The classic text of `openmetrics` (see [`to_prometheus_text`]) in pieces of about `size` bytes
/// (whole lines), to be sent one after another.
pub fn classic_pieces(openmetrics: &str, size: usize) -> impl Iterator<Item = String> + '_ {
    let mut lines = openmetrics.lines();
    let mut classic = Classic::default();
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut piece = String::with_capacity(size + 256);
        while piece.len() < size {
            match lines.next() {
                Some(line) => classic.line(line, &mut piece),
                None => {
                    classic.finish(&mut piece);
                    done = true;
                    break;
                }
            }
        }
        (!piece.is_empty()).then_some(piece)
    })
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
    fn the_pieces_put_together_are_the_whole_conversion() {
        let om = (0..200)
            .map(|i| {
                format!(
                    "# HELP phoenix_f{i} Family {i}.\n# TYPE phoenix_f{i} counter\n\
                     phoenix_f{i}_total{{n=\"{i}\"}} {i}\n"
                )
            })
            .chain(["# HELP phoenix_orphan No TYPE follows.\n# EOF\n".to_string()])
            .collect::<String>();
        let whole = to_prometheus_text(&om);
        assert!(whole.ends_with("# HELP phoenix_orphan No TYPE follows.\n"));
        for size in [1, 100, 4096, 1 << 20] {
            let pieces: Vec<String> = classic_pieces(&om, size).collect();
            assert_eq!(pieces.concat(), whole, "pieces of {size} bytes");
            assert!(pieces.iter().all(|p| !p.is_empty() && p.ends_with('\n')));
            if size == 4096 {
                assert!(pieces.len() > 1, "more than one piece");
            }
        }
        assert_eq!(classic_pieces("", 10).count(), 0);
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
