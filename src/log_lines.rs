//! Where the log's lines go: standard error, one `write` per line, except
//! that a run of lines one piece of work logs together (a batch of calls
//! recorded) can be held and written in one `write`.
//!
//! Issue 15: under SIPp at 5,000 calls/s the per-call "call" line cost
//! 1.85 % of the node's CPU in its `write` system call alone (perf, the
//! log going to a file). A batch holds up to 256 calls, so its lines in
//! one write cost the kernel one call where they cost up to 256. The lines
//! are held only while the batch's loop runs (microseconds, no await), so
//! the log is as timely as before, and a line of another thread is never
//! held by this one.

use std::cell::RefCell;
use std::io::{self, Write};

thread_local! {
    /// The lines this thread holds, when it holds any.
    static HELD: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The log's writer (`tracing_subscriber`'s `with_writer(LogLines::default)`):
/// standard error, unless this thread holds its lines (see [`together`]).
#[derive(Default)]
pub struct LogLines;

impl Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let held = HELD.with(|h| match h.borrow_mut().as_mut() {
            Some(lines) => {
                lines.extend_from_slice(buf);
                true
            }
            None => false,
        });
        if held {
            Ok(buf.len())
        } else {
            io::stderr().write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Runs `f` with the lines this thread logs meanwhile held, then writes
/// them to standard error in one `write_all`.
pub fn together<R>(f: impl FnOnce() -> R) -> R {
    together_into(&mut io::stderr(), f)
}

/// [`together`] writing to `out`. Inside another `together` the lines
/// join the outer one's. A panic in `f` still writes what it logged.
fn together_into<R>(out: &mut dyn Write, f: impl FnOnce() -> R) -> R {
    let outer = HELD.with(|h| {
        let mut h = h.borrow_mut();
        let outer = h.is_some();
        if !outer {
            *h = Some(Vec::new());
        }
        outer
    });
    if outer {
        return f();
    }
    /// Writes the held lines when `f` returns or unwinds.
    struct Release<'a>(&'a mut dyn Write);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            let lines = HELD.with(|h| h.borrow_mut().take()).unwrap_or_default();
            if !lines.is_empty() {
                // Nowhere to report a log that cannot be written.
                let _ = self.0.write_all(&lines);
            }
        }
    }
    let _release = Release(out);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each `write` it gets.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log(line: &str) {
        LogLines.write_all(line.as_bytes()).expect("held");
    }

    #[test]
    fn lines_logged_together_leave_in_one_write() {
        let mut out = Writes::default();
        let n = together_into(&mut out, || {
            log("call a\n");
            log("call b\n");
            2
        });
        assert_eq!(n, 2);
        assert_eq!(out.0, vec![b"call a\ncall b\n".to_vec()]);
        // Held no longer: nothing more reaches `out`.
        assert!(HELD.with(|h| h.borrow().is_none()));
    }

    #[test]
    fn nothing_logged_writes_nothing() {
        let mut out = Writes::default();
        together_into(&mut out, || {});
        assert!(out.0.is_empty());
    }

    #[test]
    fn an_inner_hold_joins_the_outer_one() {
        let mut out = Writes::default();
        together_into(&mut out, || {
            log("one\n");
            let mut inner = Writes::default();
            together_into(&mut inner, || log("two\n"));
            assert!(inner.0.is_empty(), "the inner hold wrote on its own");
            log("three\n");
        });
        assert_eq!(out.0, vec![b"one\ntwo\nthree\n".to_vec()]);
    }

    #[test]
    fn lines_logged_before_a_panic_are_written() {
        let mut out = Writes::default();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            together_into(&mut out, || {
                log("before\n");
                panic!("in the batch");
            })
        }));
        assert!(r.is_err());
        assert_eq!(out.0, vec![b"before\n".to_vec()]);
        assert!(HELD.with(|h| h.borrow().is_none()));
    }

    /// The subscriber `run` installs writes through `LogLines`: its
    /// events inside `together` leave in one write, a line each.
    #[test]
    fn the_logs_events_are_held_together() {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(LogLines::default)
            .with_ansi(false)
            .finish();
        let mut out = Writes::default();
        tracing::subscriber::with_default(subscriber, || {
            together_into(&mut out, || {
                tracing::info!(call_id = "a", "call");
                tracing::info!(call_id = "b", "call");
            })
        });
        assert_eq!(out.0.len(), 1, "{:?}", out.0);
        let text = String::from_utf8_lossy(&out.0[0]).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("call call_id=\"a\""), "{text}");
        assert!(lines[1].ends_with("call call_id=\"b\""), "{text}");
    }

    #[test]
    fn another_threads_lines_are_not_held() {
        let mut out = Writes::default();
        together_into(&mut out, || {
            log("mine\n");
            std::thread::spawn(|| assert!(HELD.with(|h| h.borrow().is_none())))
                .join()
                .expect("thread");
        });
        assert_eq!(out.0, vec![b"mine\n".to_vec()]);
    }
}
