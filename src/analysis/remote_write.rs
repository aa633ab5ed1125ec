//! A minimal Prometheus remote-write 1.0 client, to feed deterministic data into a real
//! Prometheus from tests and the end-to-end harness, and to send the empty request of the
//! operator's remote-write check (`controller::remote_write_check`).
//!
//! The protobuf `WriteRequest` is encoded by hand (it has three tiny messages), compressed with
//! snappy's block format and POSTed with the headers the protocol requires. Prometheus rejects
//! samples older than a series' newest one, so push each series oldest-first: samples are sorted
//! by timestamp here, and later pushes must not go back in time.

use prometheus_http_query::reqwest;

/// One series: its labels (`__name__` included) and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeries {
    /// Label names and values; sorted by name on encoding, as the protocol requires.
    pub labels: Vec<(String, String)>,
    /// The samples; sorted by timestamp on encoding.
    pub samples: Vec<Sample>,
}

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The value.
    pub value: f64,
    /// Unix time, milliseconds.
    pub timestamp_ms: i64,
}

impl TimeSeries {
    /// A series named `name` with `labels`, no samples yet.
    pub fn new(name: &str, labels: &[(&str, &str)]) -> TimeSeries {
        let mut all = vec![("__name__".to_string(), name.to_string())];
        all.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        TimeSeries {
            labels: all,
            samples: Vec::new(),
        }
    }

    /// Adds a sample (builder style).
    pub fn sample(mut self, timestamp_ms: i64, value: f64) -> TimeSeries {
        self.samples.push(Sample {
            value,
            timestamp_ms,
        });
        self
    }
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    /// The request could not be sent or its answer read.
    #[error("remote write to {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The receiver refused the data.
    #[error("remote write to {url} refused: HTTP {status}: {body}")]
    Rejected {
        url: String,
        status: u16,
        body: String,
    },
    /// Snappy compression failed (only for inputs beyond snappy's size limit).
    #[error("snappy: {0}")]
    Compress(#[from] snap::Error),
}

/// Encodes, compresses and POSTs `series` to a remote-write endpoint such as
/// `http://127.0.0.1:9090/api/v1/write`.
pub async fn push(
    client: &reqwest::Client,
    url: &str,
    series: &[TimeSeries],
) -> Result<(), RemoteWriteError> {
    push_with(client, url, &reqwest::header::HeaderMap::new(), series).await
}

/// [`push`] with `headers` (credentials, tenant headers) on the request.
pub async fn push_with(
    client: &reqwest::Client,
    url: &str,
    headers: &reqwest::header::HeaderMap,
    series: &[TimeSeries],
) -> Result<(), RemoteWriteError> {
    let body = snap::raw::Encoder::new().compress_vec(&encode_write_request(series))?;
    let http = |source| RemoteWriteError::Http {
        url: url.to_string(),
        source,
    };
    let response = client
        .post(url)
        .headers(headers.clone())
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .map_err(http)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.map_err(http)?;
    Err(RemoteWriteError::Rejected {
        url: url.to_string(),
        status: status.as_u16(),
        body: body.chars().take(1024).collect(),
    })
}

/// The protobuf encoding of `WriteRequest { repeated TimeSeries timeseries = 1; }` with
/// `TimeSeries { repeated Label labels = 1; repeated Sample samples = 2; }`,
/// `Label { string name = 1; string value = 2; }` and
/// `Sample { double value = 1; int64 timestamp = 2; }`. Labels are sorted by name and samples by
/// timestamp.
pub fn encode_write_request(series: &[TimeSeries]) -> Vec<u8> {
    let mut out = Vec::new();
    for ts in series {
        let mut labels: Vec<&(String, String)> = ts.labels.iter().collect();
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        let mut samples = ts.samples.clone();
        samples.sort_by_key(|s| s.timestamp_ms);

        let mut message = Vec::new();
        for (name, value) in labels {
            let mut label = Vec::new();
            put_bytes(&mut label, 1, name.as_bytes());
            put_bytes(&mut label, 2, value.as_bytes());
            put_bytes(&mut message, 1, &label);
        }
        for sample in samples {
            let mut encoded = Vec::new();
            put_key(&mut encoded, 1, WIRE_FIXED64);
            encoded.extend_from_slice(&sample.value.to_le_bytes());
            put_key(&mut encoded, 2, WIRE_VARINT);
            // int64 is the two's-complement bit pattern as a varint (10 bytes when negative).
            put_varint(&mut encoded, sample.timestamp_ms as u64);
            put_bytes(&mut message, 2, &encoded);
        }
        put_bytes(&mut out, 1, &message);
    }
    out
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_protobuf_examples() {
        let encode = |v| {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            out
        };
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(1), [0x01]);
        assert_eq!(encode(150), [0x96, 0x01]);
        assert_eq!(encode(300), [0xac, 0x02]);
        assert_eq!(
            encode(-1i64 as u64),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn a_write_request_encodes_byte_for_byte() {
        // Hand-assembled from the protobuf spec; labels out of order on input, samples too.
        let series = TimeSeries {
            labels: vec![("job".into(), "x".into()), ("__name__".into(), "up".into())],
            samples: vec![
                Sample {
                    value: 2.0,
                    timestamp_ms: 300,
                },
                Sample {
                    value: 1.0,
                    timestamp_ms: 150,
                },
            ],
        };
        let label_name = [
            0x0a, 0x0e, 0x0a, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', 0x12, 0x02,
            b'u', b'p',
        ];
        let label_job = [0x0a, 0x08, 0x0a, 0x03, b'j', b'o', b'b', 0x12, 0x01, b'x'];
        let mut sample_1 = vec![0x12, 0x0c, 0x09];
        sample_1.extend_from_slice(&1.0f64.to_le_bytes());
        sample_1.extend_from_slice(&[0x10, 0x96, 0x01]);
        let mut sample_2 = vec![0x12, 0x0c, 0x09];
        sample_2.extend_from_slice(&2.0f64.to_le_bytes());
        sample_2.extend_from_slice(&[0x10, 0xac, 0x02]);
        let inner: Vec<u8> = [&label_name[..], &label_job, &sample_1, &sample_2].concat();
        let mut expected = vec![0x0a, inner.len() as u8];
        expected.extend_from_slice(&inner);
        assert_eq!(encode_write_request(&[series]), expected);
        assert_eq!(encode_write_request(&[]), Vec::<u8>::new());
    }

    #[test]
    fn the_builder_puts_the_name_first() {
        let ts = TimeSeries::new("m", &[("a", "b")])
            .sample(1, 1.0)
            .sample(2, 2.0);
        assert_eq!(ts.labels[0], ("__name__".to_string(), "m".to_string()));
        assert_eq!(ts.samples.len(), 2);
    }
}
