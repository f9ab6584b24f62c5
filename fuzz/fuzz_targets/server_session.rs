//! Fuzzes the server's protocol core, `ServerSession`, driven the way the
//! reactor drives it, and checks after every call what the server promises
//! whatever a client sends:
//!
//! - no panic (libFuzzer reports one as a crash);
//! - the session holds at most an unfinished line and one read of input
//!   (measured as heap bytes, so it needs no look inside the session);
//! - one call adds at most a few replies beyond the output limit;
//! - once the session is `Closing`, it produces nothing more.
//!
//! The input is a little program, so that the fuzzer reaches deep states
//! (backpressure, held-back lines, pauses) instead of only parsing one
//! buffer. Byte 0 picks the limits; then each op is one byte, some followed
//! by a length byte and that many payload bytes (fuzz/seeds.py writes the
//! seed corpus in this form). The ops are a thin layer over the session's
//! methods, one match arm each, so an API change is one arm to adapt.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use greeter::protocol::{
    Farewell, Framing, GOODBYE, HELLO_PREFIX, HELLO_SUFFIX, Input, PROMPT, ServerSession,
    SessionLimits, SessionState, WELCOME,
};
use libfuzzer_sys::fuzz_target;

#[path = "program.rs"]
mod program;
use program::Program;

/// The most bytes one `receive` gets, standing in for one read.
const MAX_READ: usize = u8::MAX as usize;

/// Longer than any error line the session writes.
const MAX_ERROR_LINE: usize = 128;

fuzz_target!(|data: &[u8]| run(Program(data)));

fn run(mut program: Program) {
    let Some(setup) = program.byte() else {
        return;
    };
    let limits = SessionLimits {
        framing: if setup & 1 == 0 {
            Framing::Auto
        } else {
            Framing::Line
        },
        max_line: [1, 4, 16, 64, 1024][usize::from(setup >> 1 & 7) % 5],
        max_output: [1, 64, 512, 64 * 1024][usize::from(setup >> 4 & 3)],
    };
    let mut session = ServerSession::new(limits);
    // The shell's unsent output. Its allocation is ours, not the session's.
    let mut out = Vec::new();
    let heap_before = LIVE_HEAP_BYTES.load(Ordering::Relaxed);

    while let Some(op) = program.byte() {
        let was_closing = session.state() == SessionState::Closing;
        let mut out_before = out.len();
        match op % 8 {
            0 => session.greet(&mut out),
            // The shell reads only while the session wants input: that is
            // what bounds what a client can make it hold.
            1 => {
                let read = program.chunk();
                if session.wants_input(out.len()) {
                    session.receive(Input::Bytes(read), &mut out);
                }
            }
            // A message took too long (the shell's --message-timeout).
            2 => session.close(
                Farewell::MessageTimeout {
                    after: Duration::from_secs(30),
                },
                &mut out,
            ),
            // The client stayed quiet for the quiet time.
            3 => session.receive(Input::Pause, &mut out),
            4 => session.receive(Input::Eof, &mut out),
            // The client read some output: the shell sent it, and says so.
            5 => {
                let sent = usize::from(program.byte().unwrap_or(0)) * 16;
                out.drain(..sent.min(out.len()));
                out_before = out.len();
                session.output_sent(&mut out);
            }
            6 => session.output_sent(&mut out),
            _ => {
                let reason = match program.byte() {
                    Some(millis @ 1..) => Farewell::IdleTimeout {
                        after: Duration::from_millis(u64::from(millis) * 997),
                    },
                    _ => Farewell::Shutdown,
                };
                session.close(reason, &mut out);
            }
        }

        assert!(
            session.unfinished_message().is_none() || !session.holds_back_input(),
            "a message is awaited only while nothing is held back: op {op}"
        );
        if was_closing {
            assert_eq!(out.len(), out_before, "output after Closing: op {op}");
        }
        let most_per_call = WELCOME.len()
            + PROMPT.len()
            + HELLO_PREFIX.len()
            + limits.max_line
            + HELLO_SUFFIX.len()
            + PROMPT.len()
            + GOODBYE.len()
            + MAX_ERROR_LINE;
        assert!(
            out.len() <= out_before.max(limits.max_output) + most_per_call,
            "op {op} grew the output from {out_before} to {} bytes (limit {})",
            out.len(),
            limits.max_output
        );
        // An unfinished line (one byte over max_line may be a `\r`) and one
        // read; a Vec may have up to twice its length allocated.
        let held = LIVE_HEAP_BYTES
            .load(Ordering::Relaxed)
            .saturating_sub(heap_before + out.capacity());
        let allowed = 2 * (limits.max_line + 1 + MAX_READ);
        assert!(
            held <= allowed,
            "the session holds {held} heap bytes after op {op}; at most {allowed} expected"
        );
    }
}

/// Heap bytes allocated and not yet freed, by anything in this process that
/// allocates through Rust (libFuzzer itself uses C++ and is not counted).
static LIVE_HEAP_BYTES: AtomicUsize = AtomicUsize::new(0);

struct CountingAllocator;

// SAFETY: every call is passed on to the system allocator unchanged; the
// counter is only bookkeeping.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds GlobalAlloc's contract for `layout`.
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            LIVE_HEAP_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: `block` came from `alloc` or `realloc` with this layout.
        unsafe { System.dealloc(block, layout) };
        LIVE_HEAP_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` is valid for `layout`'s alignment.
        let moved = unsafe { System.realloc(block, layout, new_size) };
        if !moved.is_null() {
            LIVE_HEAP_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_HEAP_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;
