//! What a misbehaving Prometheus costs the operator, against real local HTTP servers (no mock of
//! the client): an endless answer is refused at the size cap while it streams in, an answer that
//! declares a multi-gigabyte length is refused before its body is read, and a Prometheus that
//! accepts and never answers costs one request timeout. Each is a named, retryable error, so it
//! counts against the analysis retry budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use phoenix::analysis::access::{AccessError, Prometheus, PrometheusAccess};
use phoenix::analysis::measure::{self, MeasureError, Window};
use phoenix::analysis::queries::VariantSelector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The cap the tests set: 1 MiB.
const CAP: u64 = 1 << 20;
/// Longest any test waits for something it expects, so a broken cap fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(120);

/// What a test server saw.
#[derive(Default)]
struct Seen {
    /// Requests accepted.
    requests: AtomicU64,
    /// Body bytes written before the client went away.
    bytes_sent: AtomicU64,
    /// The client closed a connection while the server was still sending.
    client_hung_up: AtomicBool,
}

/// How a test server answers.
#[derive(Clone, Copy)]
enum Behaviour {
    /// A chunked JSON answer that never ends.
    Endless,
    /// Headers declaring an 8 GiB body, then a few bytes and silence.
    DeclaresHuge,
    /// Accepts the connection, reads the request, never answers.
    Hung,
}

/// Starts a server on a free loopback port; returns its URL and what it sees.
async fn serve(behaviour: Behaviour) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = shared.clone();
            tokio::spawn(answer(stream, behaviour, seen));
        }
    });
    (url, seen)
}

/// Reads a request's head (the body, a small form, stays in the socket buffer).
async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

async fn answer(mut stream: TcpStream, behaviour: Behaviour, seen: Arc<Seen>) {
    read_head(&mut stream).await;
    seen.requests.fetch_add(1, Ordering::SeqCst);
    match behaviour {
        Behaviour::Hung => {
            // Hold the connection open, never answering, until the client gives up.
            let mut buf = [0u8; 1024];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            seen.client_hung_up.store(true, Ordering::SeqCst);
        }
        Behaviour::DeclaresHuge => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8589934592\r\n\r\n{\"status\":\"success\",";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = [0u8; 1024];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            seen.client_hung_up.store(true, Ordering::SeqCst);
        }
        Behaviour::Endless => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            let start = r#"{"status":"success","data":{"resultType":"vector","result":["#;
            let item = r#"{"metric":{"process_executable_name":"app"},"value":[1,"1"]},"#;
            let body = item.repeat(64 * 1024 / item.len());
            if stream.write_all(head.as_bytes()).await.is_err()
                || stream.write_all(chunk(start).as_bytes()).await.is_err()
            {
                return;
            }
            let piece = chunk(&body);
            loop {
                if stream.write_all(piece.as_bytes()).await.is_err() {
                    seen.client_hung_up.store(true, Ordering::SeqCst);
                    return;
                }
                seen.bytes_sent
                    .fetch_add(body.len() as u64, Ordering::SeqCst);
            }
        }
    }
}

/// One HTTP/1.1 chunk holding `data`.
fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

fn client(url: &str, timeout_seconds: u64) -> Prometheus {
    PrometheusAccess {
        prometheus_timeout_seconds: timeout_seconds,
        prometheus_max_response_bytes: CAP,
        ..Default::default()
    }
    .client(url)
    .expect("client")
}

fn selector() -> VariantSelector {
    VariantSelector {
        experiment: "shop/run".into(),
        variant: "baseline".into(),
    }
}

fn window() -> Window {
    Window::new(1_000_000, 1_000_600, 15.0, 10.0)
}

/// Waits for `flag` with the test deadline.
async fn wait_for(flag: &AtomicBool, what: &str) {
    tokio::time::timeout(DEADLINE, async {
        while !flag.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within {DEADLINE:?}"));
}

/// The top-K query of the analysis, within the test deadline (`expect`: what ends it).
async fn top_k(prom: &Prometheus, expect: &str) -> Result<Vec<String>, MeasureError> {
    tokio::time::timeout(
        DEADLINE,
        measure::topk_names(prom, &selector(), 3, &window()),
    )
    .await
    .expect(expect)
}

fn assert_too_large<T: std::fmt::Debug>(result: Result<T, MeasureError>) {
    match result {
        Err(e @ MeasureError::Access(AccessError::TooLarge(CAP))) => {
            assert!(e.is_transient(), "counts against the retry budget");
            assert!(e.to_string().contains(&CAP.to_string()), "{e}");
            if let MeasureError::Access(a) = &e {
                assert_eq!(a.reason(), "PrometheusResponseTooLarge");
            }
        }
        other => panic!("expected PrometheusResponseTooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn an_endless_answer_is_refused_at_the_cap_while_it_streams() {
    let (url, seen) = serve(Behaviour::Endless).await;
    // A timeout far beyond the test's deadline: only the cap can end these requests in time.
    let prom = client(&url, 3600);

    let top = top_k(&prom, "the cap ends the query, not the timeout").await;
    assert_too_large(top);
    wait_for(&seen.client_hung_up, "the client hangs up").await;
    // The client read about the cap and hung up: what the server got out is the cap plus what
    // the loopback socket buffers hold, nowhere near an endless stream.
    let sent = seen.bytes_sent.load(Ordering::SeqCst);
    assert!(
        sent < 64 * CAP,
        "{sent} bytes sent before the client hung up"
    );

    // The label-values request (the first of a measurement) is capped too.
    let measured = tokio::time::timeout(
        DEADLINE,
        measure::measure(&prom, &selector(), &window(), &[]),
    )
    .await
    .expect("the cap ends the measurement");
    assert_too_large(measured);

    let reachable = tokio::time::timeout(DEADLINE, measure::reachable(&prom))
        .await
        .expect("the cap ends the probe");
    assert!(!reachable, "an endless answer is not an answer");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_declared_multi_gigabyte_answer_is_refused_before_its_body_is_read() {
    let (url, seen) = serve(Behaviour::DeclaresHuge).await;
    let prom = client(&url, 3600);
    let top = top_k(&prom, "refused on the declared length").await;
    assert_too_large(top);
    wait_for(&seen.client_hung_up, "the client hangs up").await;
}

#[tokio::test]
async fn a_prometheus_that_never_answers_costs_one_timeout() {
    let (url, seen) = serve(Behaviour::Hung).await;
    let prom = client(&url, 1);
    let top = top_k(&prom, "the request timeout ends the query").await;
    match top {
        Err(e @ MeasureError::Access(AccessError::Timeout)) => {
            assert!(e.is_transient(), "counts against the retry budget");
        }
        other => panic!("expected PrometheusTimeout, got {other:?}"),
    }
    wait_for(&seen.client_hung_up, "the client hangs up").await;
    assert_eq!(
        seen.requests.load(Ordering::SeqCst),
        1,
        "one request, no retry inside"
    );
}
