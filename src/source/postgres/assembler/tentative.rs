//! Large transactions written while they are decoded: the server streams a
//! transaction that outgrows its memory in blocks before it commits, and
//! for an encoding that takes them ([`Encoding::TENTATIVE`]) each change
//! is written as it arrives, as a tentative line, so that the sink applies
//! it while the rest is decoded.
//!
//! ```text
//!  Stream Start (first block, nothing else streaming) ──> Step::TentativeBegin, section open
//!  its changes ──> spill  and  a tentative line in `out`
//!  Stream Commit (its own) ──> spill dropped, Step::Committed (its lines are out already)
//!  anything else first ──> Step::TentativeVoid: the section's lines are void,
//!                          the transaction comes again from its spill at its commit
//! ```
//!
//! Invariants:
//! - A section holds one transaction, from its first change, and nothing
//!   else: a plain transaction, another streamed one, a message outside a
//!   transaction, or the abort of a subtransaction voids it first. So the
//!   section's lines are that transaction's, in order, and the sink commits
//!   them only with its end.
//! - The spill keeps every change of the section too, so a void section
//!   loses nothing: the transaction is written again, whole, at its commit.
//! - A message that voids a section is handled after the void (it comes
//!   back as [`Step::TentativeVoid`]'s `then`), so its lines, if any, are
//!   not mistaken for tentative ones.
//! - A table's shape that changed inside the transaction (a Relation
//!   message unlike the one before, or unlike the catalog when the stream
//!   started) voids the section: a sink that follows a shape may read the
//!   source's catalog, which does not show a change not committed yet.
//! - Not while tables are copied in chunks: their merge and reconcile read
//!   a row's position as the commit's, which a tentative line cannot know.
//!   Once the last chunk took its place (and the copy's reconcile with it,
//!   earlier in the stream), a section may open.

use super::{AssembleError, Assembler, RecordKind, Step};
use crate::change::Encoding;
use crate::source::postgres::lsn::Lsn;
use crate::source::postgres::protocol::pgoutput::{Message, Relation};
use crate::source::postgres::relations::{Signature, Signatures};

/// Whether, and for which transaction, lines are written tentatively.
#[derive(Debug, Default)]
pub(super) struct Sections {
    allowed: bool,
    /// Each table's shape as last described (by the catalog when the
    /// stream started, then by Relation messages).
    shapes: Signatures,
    /// The top-level xid of the open section.
    open: Option<u32>,
}

/// Writes a tentative line of transaction `xid` (a change or a shape):
/// `write_body` writes its body after a header of the change's own
/// position. Returns where the body starts in `out`.
pub(super) fn write_tentative<E: Encoding>(
    encoding: &E,
    (lsn, xid, kind): (Lsn, u32, RecordKind),
    out: &mut Vec<u8>,
    write_body: impl FnOnce(&mut Vec<u8>),
) -> usize {
    let fields = encoding.txn(lsn.into(), Some(u64::from(xid)), None);
    match kind {
        RecordKind::Change => encoding.write_header(&fields, out, 0, lsn.into()),
        RecordKind::Schema => encoding.write_schema_header(&fields, out, 0, lsn.into()),
    }
    let start = out.len();
    write_body(out);
    start
}

/// What the message that voided a section was, to be handled after the void.
#[derive(Debug)]
pub struct Deferred {
    lsn: Lsn,
    message: Message,
}

impl Deferred {
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }
}

impl<E: Encoding> Assembler<E> {
    /// Writes large transactions while they are decoded, if the encoding
    /// takes tentative lines (and once no table is copied in chunks).
    /// `shapes`: the published tables' shapes when the stream started.
    pub fn writing_streamed_early(mut self, shapes: Signatures) -> Assembler<E> {
        self.sections.allowed = E::TENTATIVE;
        self.sections.shapes = shapes;
        self
    }

    /// A Relation message was handled: the table's shape is now this one.
    pub(super) fn note_shape(&mut self, relation: &Relation) {
        if self.sections.allowed {
            self.sections.shapes.insert(relation.id, Signature::of(relation));
        }
    }

    /// The open section's transaction.
    pub(super) fn section(&self) -> Option<u32> {
        self.sections.open
    }

    /// Whether a Stream Start for `xid` opens a section.
    pub(super) fn opens_section(&mut self, xid: u32, first_segment: bool) -> bool {
        let copying = self.watch.as_ref().is_some_and(|watch| !watch.is_done());
        let opens = self.sections.allowed && !copying && first_segment && self.streamed.is_empty();
        if opens {
            self.sections.open = Some(xid);
        }
        opens
    }

    /// Ends the open section with its transaction's commit.
    pub(super) fn close_section(&mut self) {
        self.sections.open = None;
    }

    /// Voids the open section if `message` does not belong to it: returns
    /// the step to give instead, with the message to handle next.
    pub(super) fn voided_by(&mut self, lsn: Lsn, message: Message) -> Result<Message, Step<E>> {
        let Some(xid) = self.sections.open else { return Ok(message) };
        let belongs = match &message {
            Message::Begin(_) => false,
            Message::StreamStart(start) => start.xid == xid,
            Message::StreamCommit(commit) => commit.xid == xid,
            Message::StreamAbort(abort) => abort.xid == xid && abort.subxid == xid,
            Message::Message(m) => m.transactional || m.prefix == super::HEARTBEAT_PREFIX,
            // A shape not seen before (a schema change in the transaction, not
            // committed yet, which the sink could not read in the catalog).
            Message::Relation(relation) => {
                self.sections.shapes.get(&relation.id) == Some(&Signature::of(relation))
            }
            _ => true,
        };
        if belongs {
            return Ok(message);
        }
        self.sections.open = None;
        tracing::info!(xid, %lsn, "transaction {xid}: another transaction, a subtransaction's abort or a schema change came between its streamed blocks, so it is applied from its spill file at its commit");
        Err(Step::TentativeVoid(Some(Box::new(Deferred { lsn, message }))))
    }

    /// Handles a message a void deferred.
    pub fn handle_deferred(
        &mut self,
        deferred: Deferred,
        out: &mut Vec<u8>,
    ) -> Result<Step<E>, AssembleError> {
        let Deferred { lsn, message } = deferred;
        self.handle_message(lsn, message, out)
    }
}
