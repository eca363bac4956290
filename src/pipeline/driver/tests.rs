//! The driver against a fake change stream and a sink made of the contract's ends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::*;
use crate::contract::{self, SinkEnds};
use crate::source::Received;

/// Events to hand out (with the lines each writes), then nothing (the
/// source is quiet) until the test ends.
struct FakeStream {
    events: VecDeque<(&'static [u8], Event)>,
    /// Claims that more is buffered, so the driver does not hand over pending lines early.
    always_more: bool,
    confirmed: Arc<Mutex<Vec<Position>>>,
    /// Told when every event was handed out.
    exhausted: Arc<Notify>,
}

impl ChangeStream for FakeStream {
    async fn next(&mut self, out: &mut Vec<u8>) -> Result<Event, StreamError> {
        match self.events.pop_front() {
            Some((lines, event)) => {
                out.extend_from_slice(lines);
                Ok(event)
            }
            None => {
                self.exhausted.notify_one();
                std::future::pending().await
            }
        }
    }

    fn caught_up(&self) -> bool {
        !self.always_more && self.events.is_empty()
    }

    fn is_busy(&self) -> bool {
        false
    }

    fn has_ready(&self) -> bool {
        !self.events.is_empty()
    }

    fn in_transaction(&self) -> bool {
        false
    }

    fn confirm(&mut self, position: Position) {
        self.confirmed.lock().expect("lock").push(position);
    }

    async fn keep_alive(&mut self, wait: Duration) -> Result<(), StreamError> {
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn take_received(&mut self, _visit: impl FnMut(&str, &str, u64)) -> Received {
        Received::default()
    }

    async fn finish(self) -> Result<(), StreamError> {
        Ok(())
    }
}

/// One transaction inserting a row, ending at `end`.
fn transaction(end: u64) -> Vec<(&'static [u8], Event)> {
    vec![
        (br#"{"op":"insert","table":"public.t","new":{"id":7}}"#.as_slice(), Event::Data),
        (b"\n".as_slice(), Event::Committed { end: Position::new(end), commit_time: SystemTime::UNIX_EPOCH }),
    ]
}

fn keepalive(wal_end: u64) -> (&'static [u8], Event) {
    (b"".as_slice(), Event::Idle { position: Position::new(wal_end) })
}

struct Run {
    stream: FakeStream,
    confirmed: Arc<Mutex<Vec<Position>>>,
    exhausted: Arc<Notify>,
}

fn fake(events: Vec<(&'static [u8], Event)>, always_more: bool) -> Run {
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let exhausted = Arc::new(Notify::new());
    let stream = FakeStream {
        events: events.into(),
        always_more,
        confirmed: confirmed.clone(),
        exhausted: exhausted.clone(),
    };
    Run { stream, confirmed, exhausted }
}

async fn drive_until(
    stream: FakeStream,
    ends: crate::contract::DriverEnds,
    stop: impl Future<Output = ()>,
) -> (Option<FakeStream>, Result<Ended, DriveError>) {
    let metrics = crate::metrics::global().job("driver-test", "driver_test");
    let options = super::Options { confirm_keepalives: true, ..Default::default() };
    drive(stream, ends, metrics, options, stop).await
}

fn confirmed(list: &Mutex<Vec<Position>>) -> Vec<Position> {
    list.lock().expect("lock").clone()
}

#[tokio::test]
async fn a_transaction_is_confirmed_only_once_the_sink_hands_its_receipt_back() {
    let Run { stream, confirmed: seen, exhausted } = fake(transaction(0x100), false);
    let (ends, sink) = contract::channel();
    let stop = Arc::new(Notify::new());
    let sink_task = hold_first_chunk(sink, exhausted, seen.clone(), stop.clone());
    let (stream, outcome) = drive_until(stream, ends, stop.notified()).await;
    assert_eq!(outcome.expect("ended"), Ended::Signal);
    assert!(stream.is_some(), "a stream that ended well is handed back to be finished");
    assert_eq!(confirmed(&seen), vec![Position::new(0x100)]);
    let held = sink_task.await.expect("sink");
    assert_eq!(held.confirm, Some(Position::new(0x100)));
    assert!(String::from_utf8_lossy(&held.lines).contains("\"op\":\"insert\""));
    assert!(held.confirmed_before.is_empty(), "nothing is confirmed before the receipt");
    assert_eq!(held.chunks_after, 0, "nothing more after the stop");
}

#[tokio::test]
async fn a_keepalive_is_confirmed_when_nothing_is_in_flight_and_not_while_a_chunk_is() {
    let mut events = transaction(0x100);
    events.push(keepalive(0x200));
    let Run { stream, confirmed: seen, exhausted } = fake(events, false);
    let (ends, sink) = contract::channel();
    let stop = Arc::new(Notify::new());
    // The keepalive comes while the first chunk is held.
    let sink_task = hold_first_chunk(sink, exhausted, seen.clone(), stop.clone());
    let (_, outcome) = drive_until(stream, ends, stop.notified()).await;
    outcome.expect("ended");
    assert_eq!(confirmed(&seen), vec![Position::new(0x100)]);
    let held = sink_task.await.expect("sink");
    assert!(held.confirmed_before.is_empty(), "a keepalive past an unacknowledged chunk is not confirmed");
    assert_eq!(held.chunks_after, 0, "nothing more after the stop");

    // On a quiet source, with nothing in flight, the keepalive's position is confirmed.
    let Run { stream, confirmed: seen, exhausted } = fake(vec![keepalive(0x300)], false);
    let (ends, sink) = contract::channel();
    let sink_task = tokio::spawn(take_everything(sink));
    let (_, outcome) = drive_until(stream, ends, exhausted.notified()).await;
    outcome.expect("ended");
    assert_eq!(confirmed(&seen), vec![Position::new(0x300)]);
    assert_eq!(sink_task.await.expect("sink"), 0);
}

#[tokio::test]
async fn on_stop_the_pending_lines_go_to_the_sink_and_are_acknowledged_before_the_driver_returns() {
    // The stream claims more is buffered, so the lines wait in the driver until the stop.
    let Run { stream, confirmed: seen, exhausted } = fake(transaction(0x100), true);
    let (ends, sink) = contract::channel();
    let sink_task = tokio::spawn(take_everything(sink));
    let (stream, outcome) = drive_until(stream, ends, exhausted.notified()).await;
    assert_eq!(outcome.expect("ended"), Ended::Signal);
    assert!(stream.is_some());
    assert_eq!(
        confirmed(&seen),
        vec![Position::new(0x100)],
        "the final position is confirmed before returning"
    );
    assert_eq!(sink_task.await.expect("sink"), 1);
}

#[tokio::test]
async fn a_sink_that_stops_ends_the_session_with_an_error() {
    let Run { stream, confirmed: seen, .. } = fake(transaction(0x100), false);
    let (ends, sink) = contract::channel();
    drop(sink);
    let (stream, outcome) = drive_until(stream, ends, std::future::pending()).await;
    assert!(matches!(outcome, Err(DriveError::SinkStopped)), "{outcome:?}");
    assert!(stream.is_none(), "a failed session is closed, not finished");
    assert!(confirmed(&seen).is_empty());
}

/// What [`hold_first_chunk`] saw.
struct Held {
    lines: Vec<u8>,
    confirm: Option<Position>,
    /// What the stream had confirmed when every event was handed out.
    confirmed_before: Vec<Position>,
    chunks_after: usize,
}

/// A sink that holds the first chunk until the stream has handed out every
/// event, then acknowledges it, asks the driver to stop, and takes the rest.
fn hold_first_chunk(
    mut sink: SinkEnds,
    exhausted: Arc<Notify>,
    seen: Arc<Mutex<Vec<Position>>>,
    stop: Arc<Notify>,
) -> tokio::task::JoinHandle<Held> {
    tokio::spawn(async move {
        let chunk = sink.next().await.expect("a chunk");
        exhausted.notified().await;
        let confirmed_before = confirmed(&seen);
        sink.acknowledge(chunk.receipt);
        stop.notify_one();
        let chunks_after = take_everything(sink).await;
        Held { lines: chunk.lines, confirm: chunk.confirm, confirmed_before, chunks_after }
    })
}

/// A sink that acknowledges every chunk at once; returns the chunks it took.
async fn take_everything(mut sink: SinkEnds) -> usize {
    let mut taken = 0;
    while let Some(chunk) = sink.next().await {
        taken += 1;
        sink.acknowledge(chunk.receipt);
    }
    taken
}

/// Time stands still while the driver is busy, so no hold timer cuts the lines early.
#[tokio::test(start_paused = true)]
async fn tentative_lines_go_in_chunks_of_their_own_and_a_void_section_sends_none_of_its_pending_lines() {
    let tentative = |lines: &'static [u8]| (lines, Event::Data);
    let mut events = transaction(0x100);
    events.extend([
        (b"".as_slice(), Event::TentativeBegin),
        tentative(b"A\n"),
        (b"".as_slice(), Event::Committed { end: Position::new(0x200), commit_time: SystemTime::UNIX_EPOCH }),
        (b"".as_slice(), Event::TentativeBegin),
        tentative(b"B\n"),
        keepalive(0x300),
        (b"".as_slice(), Event::TentativeVoid),
    ]);
    let Run { stream, confirmed: seen, exhausted } = fake(events, true);
    let (ends, mut sink) = contract::channel();
    let sink_task = tokio::spawn(async move {
        let mut chunks = Vec::new();
        while let Some(chunk) = sink.next().await {
            chunks.push((chunk.lines.clone(), chunk.confirm, chunk.tentative));
            sink.acknowledge(chunk.receipt);
        }
        chunks
    });
    let (_, outcome) = drive_until(stream, ends, exhausted.notified()).await;
    outcome.expect("ended");
    let chunks = sink_task.await.expect("sink");
    let shapes: Vec<_> =
        chunks.iter().map(|(lines, confirm, tentative)| (lines.len(), *confirm, *tentative)).collect();
    let first = chunks[0].0.len();
    assert_eq!(
        shapes,
        vec![
            (first, Some(Position::new(0x100)), Tentative::No),
            (2, Some(Position::new(0x200)), Tentative::Lines),
            (0, None, Tentative::Void),
        ],
        "what was pending before the section, the section to its commit, then a void without its lines"
    );
    assert_eq!(
        confirmed(&seen),
        vec![Position::new(0x100), Position::new(0x200)],
        "no keepalive is confirmed inside a section"
    );
}
