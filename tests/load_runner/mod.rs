//! Running the real `greeter-load` binary from a test, and reading its
//! `--json` report: shared by the test files that drive it (tests/load.rs,
//! tests/storm.rs). Every run is bounded by [`DEADLINE`], after which the test
//! kills it and fails.

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::{DEADLINE, binary_command};

/// The failure kinds every JSON report lists under "errors".
pub const ERROR_KINDS: [&str; 6] = [
    "mismatch",
    "reset",
    "timeout",
    "refused",
    "closed_early",
    "io",
];

// ---------------------------------------------------------------------------
// Running greeter-load

/// How one greeter-load run ended.
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// The one JSON object the run printed on stdout.
    pub fn json(&self) -> Json {
        Json::parse(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not one JSON object ({err}); {self}"))
    }

    pub fn assert_code(&self, code: i32) {
        assert_eq!(self.code, code, "unexpected exit code; {self}");
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "greeter-load {:?} exited {} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.args, self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs greeter-load to completion; kills it and fails the test if it is
/// still running after [`DEADLINE`].
pub fn greeter_load(args: &[&str]) -> Run {
    greeter_load_with(binary_command(env!("CARGO_BIN_EXE_greeter-load")), args)
}

/// [`greeter_load`] with a prepared command (for example one with a lowered
/// descriptor limit).
pub fn greeter_load_with(mut command: Command, args: &[&str]) -> Run {
    let started = Instant::now();
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("greeter-load starts");
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait works") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "greeter-load {args:?} still running after {DEADLINE:?}; stdout:\n{}\nstderr:\n{}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let run = Run {
        args: args.iter().map(|arg| arg.to_string()).collect(),
        code: -1,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed,
    };
    match status.code() {
        Some(code) => Run { code, ..run },
        None => panic!("killed by a signal ({status}); {run}"),
    }
}

/// Runs greeter-load `mode` against `addr` with `flags` (split on spaces),
/// without the live status line.
pub fn load(mode: &str, addr: &str, flags: &str) -> Run {
    let mut args = vec![mode, "--addr", addr, "--quiet"];
    args.extend(flags.split_whitespace());
    greeter_load(&args)
}

pub fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Asserts the report counted no failure of any kind: each known kind is
/// listed with 0, and so is any kind this test does not know yet.
pub fn assert_no_errors(report: &Json, run: &Run) {
    for kind in ERROR_KINDS {
        assert_eq!(report.count(&format!("errors/{kind}")), 0, "{kind}; {run}");
    }
    let Json::Object(kinds) = report.get("errors") else {
        panic!("errors is not an object; {run}");
    };
    for (kind, _) in kinds {
        assert_eq!(report.count(&format!("errors/{kind}")), 0, "{kind}; {run}");
    }
}

/// A file in the temp directory, removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("greeter-load-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------
// A small JSON reader, enough for greeter-load's reports

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses `text` as exactly one JSON value (surrounding whitespace allowed).
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut parser = JsonParser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value(0)?;
        parser.skip_whitespace();
        if parser.at != parser.bytes.len() {
            return Err(format!("trailing text at byte {}", parser.at));
        }
        Ok(value)
    }

    /// The value at a `/`-separated path of object keys ("errors/timeout";
    /// `/` because keys such as "p99.9" contain dots).
    pub fn get(&self, path: &str) -> &Json {
        let mut value = self;
        for key in path.split('/') {
            let Json::Object(members) = value else {
                panic!("{path}: {value:?} is not an object");
            };
            value = members
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, member)| member)
                .unwrap_or_else(|| panic!("{path}: no key {key:?} in {value:?}"));
        }
        value
    }

    pub fn number(&self, path: &str) -> f64 {
        match self.get(path) {
            Json::Number(number) => *number,
            other => panic!("{path} is {other:?}, not a number"),
        }
    }

    /// A whole non-negative number.
    pub fn count(&self, path: &str) -> u64 {
        let number = self.number(path);
        assert!(
            number >= 0.0 && number.fract() == 0.0 && number < 2f64.powi(53),
            "{path} is {number}, not a count"
        );
        number as u64
    }

    pub fn flag(&self, path: &str) -> bool {
        match self.get(path) {
            Json::Bool(flag) => *flag,
            other => panic!("{path} is {other:?}, not a boolean"),
        }
    }

    pub fn text(&self, path: &str) -> &str {
        match self.get(path) {
            Json::String(text) => text,
            other => panic!("{path} is {other:?}, not a string"),
        }
    }
}

pub struct JsonParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl JsonParser<'_> {
    const MAX_DEPTH: usize = 32;

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.skip_whitespace();
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", byte as char, self.at))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > Self::MAX_DEPTH {
            return Err("nested too deeply".to_string());
        }
        self.skip_whitespace();
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(format!("no JSON value at byte {}", self.at)),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.expect(b'{')?;
        let mut members = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.skip_whitespace();
            let key = self.string()?;
            if members.iter().any(|(name, _)| *name == key) {
                return Err(format!("duplicate key {key:?}"));
            }
            self.expect(b':')?;
            members.push((key, self.value(depth + 1)?));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Object(members));
                }
                _ => return Err(format!("expected , or }} at byte {}", self.at)),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(format!("expected , or ] at byte {}", self.at)),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut text = Vec::new();
        loop {
            let byte = self.peek().ok_or("unterminated string")?;
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let escaped = self.peek().ok_or("unterminated escape")?;
                    self.at += 1;
                    let decoded = match escaped {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let hex = self
                                .bytes
                                .get(self.at..self.at + 4)
                                .and_then(|hex| std::str::from_utf8(hex).ok())
                                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                                .ok_or("bad \\u escape")?;
                            self.at += 4;
                            char::from_u32(hex).unwrap_or('\u{fffd}')
                        }
                        _ => return Err(format!("bad escape at byte {}", self.at)),
                    };
                    let mut utf8 = [0; 4];
                    text.extend_from_slice(decoded.encode_utf8(&mut utf8).as_bytes());
                }
                0..0x20 => return Err(format!("control byte in string at {}", self.at)),
                _ => text.push(byte),
            }
        }
        String::from_utf8(text).map_err(|err| err.to_string())
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.at;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.at += 1;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).map_err(|e| e.to_string())?;
        text.parse::<f64>()
            .map(Json::Number)
            .map_err(|_| format!("bad number {text:?}"))
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(format!("bad literal at byte {}", self.at))
        }
    }
}
