//! The log: `log` records in simple_logger's format, written to stderr by a
//! thread of their own, so that logging can never stall or end the server.
//!
//! Why not simple_logger itself: it writes each line with `eprintln!` on the
//! thread that logs, and the server's event loop is a single thread. When
//! stderr is a pipe that nobody reads, the pipe fills, the write blocks, and
//! every connection stops with it, signal handling included (a SIGTERM is only
//! seen by the loop). When the reader has gone (`greeter-server 2>&1 | head`),
//! the write fails with `EPIPE`, `eprintln!` panics, and the process exits
//! with 101, dropping every client. simple_logger has no hook to write
//! anywhere else, so it is replaced rather than wrapped.
//!
//! Here the logging thread only formats the line (timestamp, level, target,
//! colours exactly as simple_logger does) and offers it to a bounded queue
//! with `try_send`, which never waits. A writer thread takes lines off the
//! queue and writes them to its own copy of the stderr descriptor (not through
//! `std::io::stderr()`, whose lock a blocked writer would hold). A line that
//! finds the queue full, or whose write fails, is dropped and counted; as soon
//! as a write works again, the writer logs how many were lost. At exit,
//! [`LogHandle::flush`] waits a bounded time for the queue to drain: long
//! enough for the last lines on a healthy stderr, never forever on a blocked
//! one (the writer thread just ends with the process).

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use log::{Level, LevelFilter, Log, Metadata, Record};
use time::OffsetDateTime;
use time::format_description::FormatItem;

/// Lines that may wait for the writer. Enough for a burst of a few hundred
/// connections on a slow terminal; at about 100 bytes a line, 100 KiB at most.
pub const QUEUE_CAPACITY: usize = 1024;

/// How long [`LogHandle::flush`] waits at exit for the last lines.
pub const EXIT_FLUSH_TIME: Duration = Duration::from_secs(1);

/// simple_logger's default: UTC with milliseconds.
const TIMESTAMP_FORMAT: &[FormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// Starts the writer thread and installs the logger for the `log` macros.
/// Colours are used when stderr is a terminal and `NO_COLOR` is not set.
pub fn init(level: LevelFilter) -> Result<LogHandle, String> {
    let colors =
        io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // A closed stderr (`2>&-`) cannot be copied; the log then goes nowhere,
    // as it did with eprintln!, instead of stopping the server.
    let out: Box<dyn Write + Send> = match io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(io::sink()),
    };
    let format = LineFormat { colors };
    let (queue, handle) = start(out, format, QUEUE_CAPACITY)
        .map_err(|err| format!("cannot start the log writer thread: {err}"))?;
    log::set_boxed_logger(Box::new(Logger {
        level,
        format,
        queue,
    }))
    .map_err(|err| err.to_string())?;
    log::set_max_level(level);
    Ok(handle)
}

/// What the program keeps of the log: a way to wait for it at exit, and to
/// print messages that are not log records (the final error) the same safe way.
pub struct LogHandle {
    queue: LineQueue,
}

impl LogHandle {
    /// Prints `message` as a line of its own, unformatted and whatever the
    /// log level, through the same queue as the log.
    pub fn print(&self, message: &str) {
        self.queue.offer(format!("{message}\n"));
    }

    /// Waits until the writer has handled every line offered so far, or
    /// until `timeout` has passed. Returns whether everything was handled.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.queue.shared.wait_handled(timeout)
    }
}

/// How a line looks; the writer uses it too, for the dropped-lines notice.
#[derive(Clone, Copy)]
struct LineFormat {
    colors: bool,
}

impl LineFormat {
    /// `2026-01-02T03:04:05.678Z INFO  [target] message`, as simple_logger
    /// writes it (with the same ANSI colours for the level).
    fn line(
        &self,
        now: OffsetDateTime,
        level: Level,
        target: &str,
        message: &dyn fmt::Display,
    ) -> String {
        let timestamp = now.format(TIMESTAMP_FORMAT).unwrap_or_default();
        let level_text = format!("{:<5}", level.to_string());
        let level_text = match (self.colors, color_code(level)) {
            (true, Some(code)) => format!("\x1b[{code}m{level_text}\x1b[0m"),
            _ => level_text,
        };
        format!("{timestamp} {level_text} [{target}] {message}\n")
    }
}

fn color_code(level: Level) -> Option<&'static str> {
    match level {
        Level::Error => Some("31"),
        Level::Warn => Some("33"),
        Level::Info => Some("36"),
        Level::Debug => Some("35"),
        Level::Trace => None,
    }
}

struct Logger {
    level: LevelFilter,
    format: LineFormat,
    queue: LineQueue,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = if record.target().is_empty() {
            record.module_path().unwrap_or_default()
        } else {
            record.target()
        };
        let line = self.format.line(
            OffsetDateTime::now_utc(),
            record.level(),
            target,
            record.args(),
        );
        self.queue.offer(line);
    }

    fn flush(&self) {
        self.queue.shared.wait_handled(EXIT_FLUSH_TIME);
    }
}

/// Counters shared by the logging threads and the writer.
struct Shared {
    /// Lines lost since the writer last reported a loss.
    dropped: AtomicU64,
    /// Lines accepted by the queue so far.
    queued: AtomicU64,
    /// Lines the writer has taken off the queue and written (or dropped).
    handled: Mutex<u64>,
    handled_changed: Condvar,
}

impl Shared {
    fn mark_handled(&self) {
        *self.handled.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.handled_changed.notify_all();
    }

    fn wait_handled(&self, timeout: Duration) -> bool {
        let target = self.queued.load(Ordering::SeqCst);
        let handled = self.handled.lock().unwrap_or_else(PoisonError::into_inner);
        let (handled, _) = self
            .handled_changed
            .wait_timeout_while(handled, timeout, |handled| *handled < target)
            .unwrap_or_else(PoisonError::into_inner);
        *handled >= target
    }
}

/// The sending side: offers lines without ever waiting.
struct LineQueue {
    sender: SyncSender<String>,
    shared: Arc<Shared>,
}

impl LineQueue {
    /// Queues `line` if there is room; otherwise drops and counts it.
    fn offer(&self, line: String) {
        match self.sender.try_send(line) {
            Ok(()) => {
                self.shared.queued.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                self.shared.dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Starts a writer thread that writes queued lines to `out`.
fn start(
    out: Box<dyn Write + Send>,
    format: LineFormat,
    capacity: usize,
) -> io::Result<(LineQueue, LogHandle)> {
    let (sender, receiver) = mpsc::sync_channel(capacity);
    let shared = Arc::new(Shared {
        dropped: AtomicU64::new(0),
        queued: AtomicU64::new(0),
        handled: Mutex::new(0),
        handled_changed: Condvar::new(),
    });
    let writer_shared = Arc::clone(&shared);
    thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(receiver, out, format, &writer_shared))?;
    let queue = || LineQueue {
        sender: sender.clone(),
        shared: Arc::clone(&shared),
    };
    Ok((queue(), LogHandle { queue: queue() }))
}

/// The writer thread: runs until every sender is gone.
fn write_lines(
    receiver: Receiver<String>,
    mut out: Box<dyn Write + Send>,
    format: LineFormat,
    shared: &Shared,
) {
    for line in receiver {
        if out.write_all(line.as_bytes()).is_ok() {
            report_dropped(&mut out, format, shared);
        } else {
            shared.dropped.fetch_add(1, Ordering::SeqCst);
        }
        shared.mark_handled();
    }
}

/// Writing works again: say how many lines were lost before this point.
fn report_dropped(out: &mut dyn Write, format: LineFormat, shared: &Shared) {
    let dropped = shared.dropped.swap(0, Ordering::SeqCst);
    if dropped == 0 {
        return;
    }
    let notice = format.line(
        OffsetDateTime::now_utc(),
        Level::Warn,
        module_path!(),
        &format_args!("{dropped} log lines were dropped (stderr was not accepting them)"),
    );
    if out.write_all(notice.as_bytes()).is_err() {
        shared.dropped.fetch_add(dropped, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::Sender;

    /// A stderr stand-in: each write first waits for a go-ahead (`Ok` to
    /// accept the bytes, `Err` to fail like a closed pipe), then records.
    struct GatedWriter {
        gate: Receiver<io::Result<()>>,
        written: Arc<Mutex<String>>,
    }

    impl Write for GatedWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let verdict = self
                .gate
                .recv_timeout(Duration::from_secs(20))
                .map_err(|_| io::Error::other("test gate closed"))?;
            verdict?;
            self.written
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(buf));
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn gated(
        capacity: usize,
    ) -> (
        LineQueue,
        LogHandle,
        Sender<io::Result<()>>,
        Arc<Mutex<String>>,
    ) {
        let (gate_sender, gate) = mpsc::channel();
        let written = Arc::new(Mutex::new(String::new()));
        let out = GatedWriter {
            gate,
            written: Arc::clone(&written),
        };
        let (queue, handle) =
            start(Box::new(out), LineFormat { colors: false }, capacity).expect("writer starts");
        (queue, handle, gate_sender, written)
    }

    fn dropped(queue: &LineQueue) -> u64 {
        queue.shared.dropped.load(Ordering::SeqCst)
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (queue, handle, gate, written) = gated(2);
        // The writer takes the first line and blocks writing it; two more fill
        // the queue; the next three find it full.
        queue.offer("one\n".into());
        for line in ["two\n", "three\n", "four\n", "five\n", "six\n"] {
            queue.offer(line.into());
        }
        // Whether the writer had taken "one" yet decides whether 3 or 4 fit.
        let lost = dropped(&queue);
        assert!(lost == 3 || lost == 4, "dropped {lost}");
        for _ in 0..10 {
            gate.send(Ok(())).unwrap();
        }
        assert!(handle.flush(Duration::from_secs(20)));
        let written = written.lock().unwrap().clone();
        assert!(written.starts_with("one\n"), "{written}");
        assert!(
            written.contains(&format!("WARN  [greeter::logging] {lost} log lines were dropped (stderr was not accepting them)\n")),
            "{written}"
        );
        assert_eq!(dropped(&queue), 0);
    }

    #[test]
    fn a_failed_write_is_counted_and_reported_once_writing_works() {
        let (queue, handle, gate, written) = gated(8);
        gate.send(Err(io::Error::from(io::ErrorKind::BrokenPipe)))
            .unwrap();
        queue.offer("lost\n".into());
        assert!(handle.flush(Duration::from_secs(20)));
        assert_eq!(dropped(&queue), 1);
        assert_eq!(*written.lock().unwrap(), "");

        gate.send(Ok(())).unwrap();
        gate.send(Ok(())).unwrap();
        queue.offer("back\n".into());
        assert!(handle.flush(Duration::from_secs(20)));
        let written = written.lock().unwrap().clone();
        let (first, notice) = written.split_once('\n').expect("two lines");
        assert_eq!(first, "back");
        assert!(
            notice.ends_with(
                " WARN  [greeter::logging] 1 log lines were dropped (stderr was not accepting them)\n"
            ),
            "{notice}"
        );
        assert_eq!(dropped(&queue), 0);
    }

    #[test]
    fn a_failed_notice_keeps_the_count() {
        let (queue, handle, gate, written) = gated(8);
        gate.send(Err(io::Error::from(io::ErrorKind::BrokenPipe)))
            .unwrap();
        gate.send(Ok(())).unwrap();
        gate.send(Err(io::Error::from(io::ErrorKind::BrokenPipe)))
            .unwrap();
        queue.offer("lost\n".into());
        queue.offer("written\n".into());
        assert!(handle.flush(Duration::from_secs(20)));
        assert_eq!(*written.lock().unwrap(), "written\n");
        assert_eq!(dropped(&queue), 1, "the notice's count is kept for later");
    }

    #[test]
    fn flush_gives_up_after_its_timeout_on_a_blocked_writer() {
        let (queue, handle, gate, _written) = gated(8);
        queue.offer("stuck\n".into());
        assert!(!handle.flush(Duration::from_millis(50)));
        gate.send(Ok(())).unwrap();
        assert!(handle.flush(Duration::from_secs(20)));
    }

    #[test]
    fn print_is_unformatted_and_waits_its_turn() {
        let (queue, handle, gate, written) = gated(8);
        queue.offer("first\n".into());
        handle.print("greeter-server: the event loop failed: x");
        gate.send(Ok(())).unwrap();
        gate.send(Ok(())).unwrap();
        assert!(handle.flush(Duration::from_secs(20)));
        assert_eq!(
            *written.lock().unwrap(),
            "first\ngreeter-server: the event loop failed: x\n"
        );
    }

    #[test]
    fn lines_look_like_simple_loggers() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_764_428_583_123_456_789).unwrap();
        let plain = LineFormat { colors: false };
        assert_eq!(
            plain.line(
                at,
                Level::Info,
                "greeter::server",
                &"listening on 127.0.0.1:6000"
            ),
            "2025-11-29T15:03:03.123Z INFO  [greeter::server] listening on 127.0.0.1:6000\n"
        );
        let colored = LineFormat { colors: true };
        assert_eq!(
            colored.line(at, Level::Warn, "t", &"m"),
            "2025-11-29T15:03:03.123Z \x1b[33mWARN \x1b[0m [t] m\n"
        );
        assert_eq!(
            colored.line(at, Level::Trace, "t", &"m"),
            "2025-11-29T15:03:03.123Z TRACE [t] m\n"
        );
    }
}
