//! An incremental parser of `text/event-stream` (server-sent events, as
//! the WHATWG HTML standard defines them) for what the control API sends:
//! `event:` and `data:` fields and comment lines, with any line ending.
//!
//! Bytes arrive in arbitrary chunks (a frame may end mid-line, or between
//! the `\r` and `\n` of one line ending), so the parser keeps the partial
//! line between calls. Bounded: a line or an event's data longer than
//! [`MAX_EVENT_BYTES`] is an error rather than unbounded buffering.

/// Longest line, and longest data of one event, accepted.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `message` when the server sent none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The stream broke the size bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a server-sent event line or event is longer than {MAX_EVENT_BYTES} bytes")]
pub struct EventTooLong;

/// Parser state carried across chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The current line, without its ending.
    line: Vec<u8>,
    /// The last byte was `\r`: a `\n` right after it ends no new line.
    after_cr: bool,
    /// The event type of the event being built (empty: `message`).
    event: String,
    /// Data lines so far, each followed by `\n`, as the standard builds it.
    data: String,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, EventTooLong> {
        let mut out = Vec::new();
        for &b in chunk {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' => self.end_line(&mut out)?,
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut out)?;
                }
                _ => {
                    if self.line.len() >= MAX_EVENT_BYTES {
                        return Err(EventTooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), EventTooLong> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                    return Err(EventTooLong);
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            // `id` and `retry` matter to browsers reconnecting on their
            // own; unknown fields are ignored, as the standard says.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        // No data line: the standard dispatches nothing.
        if data.is_empty() {
            return;
        }
        data.pop();
        out.push(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    fn parse_whole(input: &[u8]) -> Vec<SseEvent> {
        SseParser::new().push(input).unwrap()
    }

    fn parse_bytewise(input: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        input
            .iter()
            .flat_map(|b| p.push(std::slice::from_ref(b)).unwrap())
            .collect()
    }

    const STREAM: &[u8] = b": keepalive\n\nevent: job\ndata: {\"a\":1}\n\n\
event: job\r\ndata: two\r\ndata: lines\r\n\r\n\
event:job\rdata:cr-only\r\r\
data: unnamed\n\n";

    #[test]
    fn fields_comments_and_every_line_ending() {
        let expected = vec![
            ev("job", "{\"a\":1}"),
            ev("job", "two\nlines"),
            ev("job", "cr-only"),
            ev("message", "unnamed"),
        ];
        assert_eq!(parse_whole(STREAM), expected);
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let whole = parse_whole(STREAM);
        assert_eq!(parse_bytewise(STREAM), whole);
        for split in 0..STREAM.len() {
            let mut p = SseParser::new();
            let mut got = p.push(&STREAM[..split]).unwrap();
            got.extend(p.push(&STREAM[split..]).unwrap());
            assert_eq!(got, whole, "split at {split}");
        }
    }

    #[test]
    fn crlf_split_between_chunks_ends_one_line() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: x\r").unwrap().is_empty());
        // Had the \n counted as a second line ending, the event would
        // already be dispatched here.
        assert!(p.push(b"\n").unwrap().is_empty());
        assert_eq!(p.push(b"\r\n").unwrap(), vec![ev("message", "x")]);
    }

    #[test]
    fn an_event_waits_for_its_blank_line() {
        let mut p = SseParser::new();
        assert!(p
            .push(b"event: job\ndata: {\"partial\"")
            .unwrap()
            .is_empty());
        assert!(p.push(b": true}\n").unwrap().is_empty());
        assert_eq!(
            p.push(b"\n").unwrap(),
            vec![ev("job", "{\"partial\": true}")]
        );
    }

    #[test]
    fn no_data_no_event_and_type_resets() {
        assert!(parse_whole(b"event: job\n\n\n: just a comment\n\n").is_empty());
        // The type of an event without data does not leak into the next.
        assert_eq!(
            parse_whole(b"event: job\n\ndata: y\n\n"),
            vec![ev("message", "y")]
        );
        // An empty data line is still data.
        assert_eq!(parse_whole(b"data\n\n"), vec![ev("message", "")]);
        assert_eq!(
            parse_whole(b"id: 7\nretry: 10\nfoo: bar\ndata:  two spaces\n\n"),
            vec![ev("message", " two spaces")]
        );
    }

    #[test]
    fn oversized_lines_and_events_are_refused() {
        let mut p = SseParser::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(p.push(&big), Err(EventTooLong));

        let mut p = SseParser::new();
        let line = format!("data: {}\n", "y".repeat(MAX_EVENT_BYTES / 2));
        assert!(p.push(line.as_bytes()).is_ok());
        assert_eq!(p.push(line.as_bytes()), Err(EventTooLong));
    }
}
