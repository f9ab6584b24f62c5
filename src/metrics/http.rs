//! The one HTTP exchange a metrics scraper has with greeter, as pure code.
//!
//! A scraper connects, sends a request head and reads one response; greeter
//! then closes, as `Connection: close` says. That is all of HTTP/1.1 a
//! Prometheus scrape needs: no keep-alive, no request body, no chunked
//! encoding. The request head is parsed by httparse (hyper's parser), because
//! HTTP's edge cases are where hand-written parsers go wrong; what greeter
//! decides about it is here, tested without sockets, like the greeting
//! protocol's core.
//!
//! A scraper is a client like any other: its head must fit in
//! [`MAX_REQUEST_HEAD`] bytes, and the shell gives the whole exchange one
//! deadline (the message timeout, else the idle timeout), so a slow or
//! hostile one costs one bounded slot and never stalls the loop.

use super::exposition::CONTENT_TYPE;

/// The largest request head read, in bytes. A Prometheus scrape sends about
/// 300.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Headers beyond this many make the head too large.
const MAX_HEADERS: usize = 32;
/// The one path served.
pub const METRICS_PATH: &str = "/metrics";

/// What to answer a request with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The metrics page (`GET`), or its headers alone (`HEAD`).
    Metrics { with_body: bool },
    /// An error status and a one-line reason.
    Error(Refused),
}

/// Why a request is not answered with the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// 400: not an HTTP request head.
    Malformed,
    /// 404: a path other than [`METRICS_PATH`].
    NotFound,
    /// 405: a method other than GET or HEAD.
    MethodNotAllowed,
    /// 431: the head is over [`MAX_REQUEST_HEAD`] bytes or has too many headers.
    HeadTooLarge,
}

/// Decides what the bytes received so far ask for: `None` while the head is
/// still incomplete (and within its limit).
pub fn decide(input: &[u8]) -> Option<Answer> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let refused = match request.parse(input) {
        Ok(httparse::Status::Partial) if input.len() < MAX_REQUEST_HEAD => return None,
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            Refused::HeadTooLarge
        }
        Err(_) => Refused::Malformed,
        Ok(httparse::Status::Complete(len)) if len > MAX_REQUEST_HEAD => Refused::HeadTooLarge,
        Ok(httparse::Status::Complete(_)) => {
            let path = request.path.unwrap_or_default();
            // A query string (`?name=...`) does not change what is served.
            let path = path.split_once('?').map_or(path, |(path, _)| path);
            let with_body = match request.method.unwrap_or_default() {
                "GET" => true,
                "HEAD" => false,
                _ => return Some(Answer::Error(Refused::MethodNotAllowed)),
            };
            if path != METRICS_PATH {
                return Some(Answer::Error(Refused::NotFound));
            }
            return Some(Answer::Metrics { with_body });
        }
    };
    Some(Answer::Error(refused))
}

/// Writes the response with the metrics page `page`.
pub fn write_metrics(page: &str, with_body: bool, out: &mut Vec<u8>) {
    write_head("200 OK", CONTENT_TYPE, page.len(), "", out);
    if with_body {
        out.extend_from_slice(page.as_bytes());
    }
}

/// Writes an error response that says what was wrong and what is served.
pub fn write_refusal(why: Refused, out: &mut Vec<u8>) {
    let too_large = format!("request head too large (limit {MAX_REQUEST_HEAD} bytes)\n");
    let (status, extra, body) = match why {
        Refused::Malformed => ("400 Bad Request", "", "not an HTTP request\n"),
        Refused::NotFound => (
            "404 Not Found",
            "",
            "not found: this server serves GET /metrics only\n",
        ),
        Refused::MethodNotAllowed => (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "method not allowed: this server serves GET /metrics only\n",
        ),
        Refused::HeadTooLarge => (
            "431 Request Header Fields Too Large",
            "",
            too_large.as_str(),
        ),
    };
    write_head(status, "text/plain; charset=utf-8", body.len(), extra, out);
    out.extend_from_slice(body.as_bytes());
}

fn write_head(status: &str, content_type: &str, len: usize, extra: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\
             {extra}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus 2.x sends, header for header.
    const PROMETHEUS_SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\n\
        Host: 127.0.0.1:9100\r\n\
        User-Agent: Prometheus/2.42.0\r\n\
        Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n\
        Accept-Encoding: gzip\r\n\
        X-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";

    #[test]
    fn a_prometheus_scrape_gets_the_metrics_and_only_once_whole() {
        for end in 0..PROMETHEUS_SCRAPE.len() {
            assert_eq!(decide(&PROMETHEUS_SCRAPE[..end]), None, "{end} bytes");
        }
        assert_eq!(
            decide(PROMETHEUS_SCRAPE),
            Some(Answer::Metrics { with_body: true })
        );
    }

    #[test]
    fn head_and_a_query_string_are_served_too() {
        assert_eq!(
            decide(b"HEAD /metrics HTTP/1.0\r\n\r\n"),
            Some(Answer::Metrics { with_body: false })
        );
        assert_eq!(
            decide(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"),
            Some(Answer::Metrics { with_body: true })
        );
    }

    #[test]
    fn other_requests_get_the_status_that_says_why() {
        let cases: [(&[u8], Refused); 5] = [
            (b"GET / HTTP/1.1\r\n\r\n", Refused::NotFound),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", Refused::NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Refused::MethodNotAllowed),
            (b"Michael\n", Refused::Malformed),
            (
                b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
                Refused::Malformed,
            ),
        ];
        for (input, why) in cases {
            assert_eq!(decide(input), Some(Answer::Error(why)), "{input:?}");
        }
    }

    #[test]
    fn a_head_past_the_limit_is_refused_without_waiting_for_its_end() {
        let mut head = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        head.resize(MAX_REQUEST_HEAD - 1, b'a');
        assert_eq!(decide(&head), None);
        head.push(b'a');
        assert_eq!(decide(&head), Some(Answer::Error(Refused::HeadTooLarge)));
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(decide(&many), Some(Answer::Error(Refused::HeadTooLarge)));
    }

    /// A complete head of `len` bytes, padded with a header.
    fn head_of(len: usize) -> Vec<u8> {
        let mut head = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        head.resize(len - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        head
    }

    /// Browsers and proxies in front of a scraper may add long headers
    /// (cookies): a head of several KiB is still a scrape.
    #[test]
    fn a_whole_head_is_served_up_to_the_limit_and_refused_past_it() {
        assert_eq!(
            decide(&head_of(6000)),
            Some(Answer::Metrics { with_body: true })
        );
        assert_eq!(
            decide(&head_of(MAX_REQUEST_HEAD)),
            Some(Answer::Metrics { with_body: true })
        );
        assert_eq!(
            decide(&head_of(MAX_REQUEST_HEAD + 1)),
            Some(Answer::Error(Refused::HeadTooLarge))
        );
    }

    #[test]
    fn responses_carry_their_length_and_close() {
        let mut out = Vec::new();
        write_metrics("m 1\n", true, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: 4\r\n\
                 Connection: close\r\n\r\nm 1\n"
            )
        );
        let mut out = Vec::new();
        write_metrics("m 1\n", false, &mut out);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n")
        );
        let mut out = Vec::new();
        write_refusal(Refused::MethodNotAllowed, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("Allow: GET, HEAD\r\n"), "{text}");
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert!(
            text.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{text}"
        );
    }
}
