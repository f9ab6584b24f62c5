//! Reading one page of a server's metrics: the URL `--server-metrics` takes,
//! a blocking HTTP/1.1 GET, and the sample lines of Prometheus' text format.
//!
//! It runs twice per load run, before and after, never during, so it is
//! plain blocking std::net with a deadline rather than a client on the load
//! generator's event loop, and it reads just what greeter-server's endpoint
//! sends (`Content-Length`, `Connection: close`; see `src/metrics/http.rs`):
//! a page is a few kilobytes, so it is read whole, up to a bound, and the
//! response head is parsed by httparse, as the server parses requests.
//!
//! Where it sits: the client of the server's `src/metrics/http.rs`.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The largest response read: greeter's page is about 2 KiB.
const MAX_RESPONSE: usize = 1 << 20;
/// Response header lines read at the most.
const MAX_HEADERS: usize = 32;

/// What to pass, in every refusal of a URL.
const EXPECTED: &str = "expected http://HOST:PORT/metrics, the address greeter-server logs \
                        for its --metrics-listen (\"metrics on http://127.0.0.1:9100/metrics\")";

/// A metrics endpoint: `http://HOST:PORT/metrics`, nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsUrl {
    /// `HOST:PORT`, as given: what is resolved and sent as `Host`.
    authority: String,
}

impl FromStr for MetricsUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<MetricsUrl, String> {
        let refuse = |why: &str| Err(format!("{why}: {EXPECTED}"));
        let Some(rest) = text.strip_prefix("http://") else {
            return if text.starts_with("https://") {
                refuse("HTTPS is not spoken (greeter-server serves plain HTTP)")
            } else {
                refuse("not an http:// URL")
            };
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if path != "/metrics" {
            return refuse("the path must be /metrics");
        }
        let Some((host, port)) = authority.rsplit_once(':') else {
            return refuse("no port");
        };
        if host.is_empty() || host.contains(['@', '?', '#']) {
            return refuse("no host, or more than a host");
        }
        if !matches!(port.parse::<u16>(), Ok(1..)) {
            return refuse("the port is not a number from 1 to 65535");
        }
        Ok(MetricsUrl {
            authority: authority.to_string(),
        })
    }
}

impl fmt::Display for MetricsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}/metrics", self.authority)
    }
}

impl MetricsUrl {
    /// GETs the page within `timeout` (connect, request and the whole
    /// response); the error says what happened and what to check.
    pub fn get(&self, timeout: Duration) -> Result<String, String> {
        let cannot = |what: String| format!("cannot read the server's metrics at {self}: {what}");
        let deadline = Instant::now() + timeout;
        let mut stream = self.connect(timeout).map_err(cannot)?;
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nUser-Agent: greeter-load\r\n\
             Accept: text/plain\r\nConnection: close\r\n\r\n",
            self.authority
        );
        let response =
            exchange(&mut stream, request.as_bytes(), deadline, timeout).map_err(|err| {
                cannot(format!(
                    "{err} (is {} greeter-server's --metrics-listen address, and the server \
                     not stopped?)",
                    self.authority
                ))
            })?;
        body(&response).map_err(|err| {
            cannot(format!(
                "{err} (is {} greeter-server's --metrics-listen address?)",
                self.authority
            ))
        })
    }

    fn connect(&self, timeout: Duration) -> Result<TcpStream, String> {
        let addrs = self
            .authority
            .to_socket_addrs()
            .map_err(|err| format!("cannot resolve {}: {err}", self.authority))?;
        let mut last = format!("{} resolves to no address", self.authority);
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => return Ok(stream),
                Err(err) => {
                    last = format!(
                        "connect to {addr}: {err} (is greeter-server running with \
                         --metrics-listen {addr}?)"
                    )
                }
            }
        }
        Err(last)
    }
}

/// Sends `request` and reads the response to the server's close, all before
/// `deadline`.
fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let late = || format!("no whole answer within {timeout:?}");
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    };
    stream
        .set_write_timeout(Some(remaining().ok_or_else(late)?))
        .and_then(|()| stream.write_all(request))
        .map_err(|err| format!("sending the request: {err}"))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = remaining().ok_or_else(late)?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|err| err.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(response),
            Ok(n) if response.len() + n > MAX_RESPONSE => {
                return Err(format!("the answer is over {MAX_RESPONSE} bytes"));
            }
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(late());
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("reading the answer: {err}")),
        }
    }
}

/// The body of a whole `200 OK` response, as text.
fn body(response: &[u8]) -> Result<String, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(response) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err("the answer ended inside its head".into()),
        Err(err) => return Err(format!("the answer is not HTTP ({err})")),
    };
    let code = head.code.unwrap_or_default();
    if code != 200 {
        let reason = head.reason.unwrap_or_default();
        return Err(format!("the server answered {code} {reason}"));
    }
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| String::from_utf8_lossy(header.value).trim().to_string())
    };
    if header("Transfer-Encoding").is_some() {
        return Err("the answer is chunked, and only Content-Length is read".into());
    }
    let mut body = &response[head_len..];
    if let Some(length) = header("Content-Length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("Content-Length {length:?} is not a number"))?;
        if body.len() < length {
            return Err(format!(
                "the answer ended after {} of its {length} bytes",
                body.len()
            ));
        }
        body = &body[..length];
    }
    String::from_utf8(body.to_vec()).map_err(|_| "the page is not UTF-8 text".into())
}

/// One sample line of the text format: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// The samples of a page in Prometheus' text format; `# HELP`, `# TYPE` and
/// blank lines are skipped, and a line that is none of these is an error.
pub fn parse_samples(page: &str) -> Result<Vec<Sample>, String> {
    page.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).ok_or_else(|| format!("not a sample line: {line:?}")))
        .collect()
}

/// `name`, optional `{labels}`, the value, an optional timestamp.
fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = parse_labels(inner, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next()?.parse().ok()?;
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    (valid_name && fields.nth(1).is_none()).then(|| Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Reads `label="value",...}` into `labels`; returns what follows the `}`.
fn parse_labels<'a>(mut text: &'a str, labels: &mut Vec<(String, String)>) -> Option<&'a str> {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix('}') {
            return Some(rest);
        }
        let (name, rest) = text.split_once('=')?;
        let rest = rest.trim_start();
        let mut chars = rest.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => value.push(match chars.next()?.1 {
                    'n' => '\n',
                    other => other,
                }),
                (_, c) => value.push(c),
            }
        };
        labels.push((name.trim().to_string(), value));
        text = rest[1 + end + 1..].trim_start();
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_http_url_to_metrics_with_a_port_is_taken() {
        let url: MetricsUrl = "http://127.0.0.1:9100/metrics".parse().unwrap();
        assert_eq!(url.to_string(), "http://127.0.0.1:9100/metrics");
        assert!("http://[::1]:9100/metrics".parse::<MetricsUrl>().is_ok());
        assert!(
            "http://localhost:9100/metrics"
                .parse::<MetricsUrl>()
                .is_ok()
        );
        for bad in [
            "127.0.0.1:9100",
            "https://127.0.0.1:9100/metrics",
            "http://127.0.0.1:9100",
            "http://127.0.0.1:9100/",
            "http://127.0.0.1:9100/metrics?x=1",
            "http://127.0.0.1/metrics",
            "http://127.0.0.1:0/metrics",
            "http://127.0.0.1:99999/metrics",
            "http://:9100/metrics",
            "http://user@127.0.0.1:9100/metrics",
        ] {
            let err = bad.parse::<MetricsUrl>().unwrap_err();
            assert!(err.contains("http://HOST:PORT/metrics"), "{bad}: {err}");
        }
    }

    #[test]
    fn sample_lines_are_read_with_their_labels() {
        let page = "# HELP greeter_exchanges_total Names answered.\n\
                    # TYPE greeter_exchanges_total counter\n\
                    greeter_exchanges_total 42\n\
                    \n\
                    greeter_poll_seconds_total 3.25\n\
                    greeter_connections_closed_total{reason=\"done\"} 7\n\
                    odd{a=\"x\\\"y\\\\z\\n\", b = \"\"  ,} 1e3 1700000000000\n";
        let samples = parse_samples(page).unwrap();
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].name, "greeter_exchanges_total");
        assert_eq!(samples[0].value, 42.0);
        assert!(samples[0].labels.is_empty());
        assert_eq!(samples[1].value, 3.25);
        assert_eq!(
            samples[2].labels,
            vec![("reason".to_string(), "done".to_string())]
        );
        assert_eq!(samples[3].name, "odd");
        assert_eq!(
            samples[3].labels,
            vec![
                ("a".to_string(), "x\"y\\z\n".to_string()),
                ("b".to_string(), String::new())
            ]
        );
        assert_eq!(samples[3].value, 1000.0);
    }

    #[test]
    fn a_line_that_is_no_sample_is_an_error() {
        for bad in [
            "<html>",
            "name",
            "name{reason=\"done\" 1",
            "name{reason=done} 1",
            "name one",
            "name 1 2 3",
            "no-dashes 1",
            "{reason=\"done\"} 1",
        ] {
            let err = parse_samples(bad).unwrap_err();
            assert!(err.contains("not a sample line"), "{bad}: {err}");
        }
    }

    /// Runs `exchange` against a one-shot server that reads the request
    /// and then does `answer` with its socket.
    fn exchange_with(answer: impl FnOnce(TcpStream) + Send + 'static) -> Result<Vec<u8>, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().expect("accept");
            let mut request = [0; 64];
            let _ = peer.read(&mut request);
            answer(peer);
        });
        let mut stream = TcpStream::connect(addr).expect("connect");
        let wait = Duration::from_secs(10);
        let result = exchange(&mut stream, b"GET", Instant::now() + wait, wait);
        drop(stream);
        server.join().expect("the server thread");
        result
    }

    #[test]
    fn an_answer_over_the_limit_is_refused_and_one_at_it_read() {
        let at_limit = exchange_with(|mut peer| {
            let _ = peer.write_all(&vec![b'x'; MAX_RESPONSE]);
        });
        assert_eq!(at_limit.map(|answer| answer.len()), Ok(MAX_RESPONSE));
        let over = exchange_with(|mut peer| {
            let _ = peer.write_all(&vec![b'x'; MAX_RESPONSE + 1]);
        });
        assert_eq!(
            over,
            Err(format!("the answer is over {MAX_RESPONSE} bytes"))
        );
    }

    #[test]
    fn a_reset_is_a_read_error_not_a_late_answer() {
        let reset = exchange_with(|peer| {
            let _ = socket2::SockRef::from(&peer).set_linger(Some(Duration::ZERO));
        });
        let err = reset.unwrap_err();
        assert!(err.starts_with("reading the answer: "), "{err}");
    }

    #[test]
    fn only_a_whole_200_answer_gives_its_body() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\na 1\nextra";
        assert_eq!(body(ok).unwrap(), "a 1\n");
        let to_close = b"HTTP/1.1 200 OK\r\n\r\na 1\n";
        assert_eq!(body(to_close).unwrap(), "a 1\n");
        for (response, why) in [
            (&b"HTTP/1.1 404 Not Found\r\n\r\n"[..], "404 Not Found"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\na 1\n",
                "after 4 of its 9",
            ),
            (b"HTTP/1.1 200 OK\r\nContent-", "inside its head"),
            (b"SSH-2.0-OpenSSH\r\n", "not HTTP"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "chunked",
            ),
        ] {
            let err = body(response).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
