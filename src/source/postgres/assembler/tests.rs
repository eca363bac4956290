use bytes::Bytes;

use super::*;
use crate::change::encode::JsonLines;
use crate::change::mirror_records::MirrorRecords;
use crate::source::postgres::protocol::pgoutput::encode::encode;
use crate::source::postgres::protocol::pgoutput::{
    Begin, Column, ColumnDef, Commit, Insert, Relation, StreamAbort, StreamCommit, StreamStart,
};

/// Relation 1, `public.t`, with `columns` (name, type OID, key flag).
fn relation_of(xid: Option<u32>, columns: &[(&str, u32, u8)]) -> Message {
    Message::Relation(Relation {
        xid,
        id: 1,
        namespace: "public".into(),
        name: "t".into(),
        replica_identity: b'd',
        columns: columns
            .iter()
            .map(|(name, type_oid, flags)| ColumnDef {
                flags: *flags,
                name: (*name).into(),
                type_oid: *type_oid,
                type_modifier: -1,
            })
            .collect(),
    })
}

fn relation(xid: Option<u32>) -> Message {
    relation_of(xid, &[("id", 23, 1), ("v", 25, 0)])
}

fn insert(xid: Option<u32>, id: &str) -> Message {
    Message::Insert(Insert {
        xid,
        relation_id: 1,
        new: Tuple(vec![Column::Text(Bytes::from(id.to_string())), Column::Null]),
    })
}

fn feed(
    assembler: &mut Assembler<JsonLines>,
    lsn: u64,
    message: Message,
    out: &mut Vec<u8>,
) -> Step<JsonLines> {
    assembler.handle(Lsn(lsn), encode(&message), out).expect("handled")
}

fn lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8(out.to_vec())
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect()
}

#[test]
fn plain_transaction_becomes_lines_with_stable_ids() {
    let mut asm = Assembler::new(JsonLines, 1 << 20, None, Default::default());
    let mut out = Vec::new();
    feed(&mut asm, 10, Message::Begin(Begin { final_lsn: Lsn(0x50), commit_time: 0, xid: 700 }), &mut out);
    feed(&mut asm, 11, relation(None), &mut out);
    feed(&mut asm, 12, insert(None, "1"), &mut out);
    feed(&mut asm, 13, insert(None, "2"), &mut out);
    assert!(asm.in_transaction());
    let step = feed(
        &mut asm,
        0x58,
        Message::Commit(Commit { flags: 0, commit_lsn: Lsn(0x50), end_lsn: Lsn(0x58), commit_time: 0 }),
        &mut out,
    );
    assert!(matches!(step, Step::Committed { end, .. } if end == Position::new(0x58)));
    assert!(!asm.in_transaction());
    let lines = lines(&out);
    assert_eq!(lines.len(), 3, "the shape, then two inserts");
    assert_eq!(lines[0]["id"], "0/50:0:schema");
    assert_eq!(lines[0]["op"], "schema");
    assert_eq!(
        lines[0]["columns"],
        serde_json::json!([{"name": "id", "type": "int4", "key": true}, {"name": "v", "type": "text", "key": false}])
    );
    assert_eq!(lines[1]["id"], "0/50:0");
    assert_eq!(lines[2]["id"], "0/50:1");
    assert_eq!(lines[1]["lsn"], "0/C");
    assert_eq!(lines[1]["xid"], 700);
    assert_eq!(lines[1]["commit_time"], "2000-01-01T00:00:00.000000Z");
    assert_eq!(lines[2]["key"], serde_json::json!({"id": 2}));
    assert_eq!(lines[2]["new"], serde_json::json!({"id": 2, "v": null}));
}

#[test]
fn a_new_shape_is_announced_before_its_first_change_and_ids_do_not_move() {
    let mut asm = Assembler::new(JsonLines, 1 << 20, None, Default::default());
    let mut out = Vec::new();
    let wider = relation_of(None, &[("id", 23, 1), ("w", 1700, 0), ("v", 25, 0)]);
    let row3 = |id: &str| {
        Message::Insert(Insert {
            xid: None,
            relation_id: 1,
            new: Tuple(vec![Column::Text(Bytes::from(id.to_string())), Column::Null, Column::Null]),
        })
    };
    feed(&mut asm, 1, Message::Begin(Begin { final_lsn: Lsn(0x70), commit_time: 0, xid: 7 }), &mut out);
    feed(&mut asm, 2, relation(None), &mut out);
    feed(&mut asm, 3, insert(None, "1"), &mut out);
    feed(&mut asm, 4, insert(None, "2"), &mut out);
    feed(&mut asm, 5, wider, &mut out);
    feed(&mut asm, 6, row3("3"), &mut out);
    feed(
        &mut asm,
        7,
        Message::Commit(Commit { flags: 0, commit_lsn: Lsn(0x70), end_lsn: Lsn(0x78), commit_time: 0 }),
        &mut out,
    );
    let lines = lines(&out);
    let ids: Vec<_> = lines.iter().map(|l| l["id"].as_str().expect("id").to_string()).collect();
    assert_eq!(ids, ["0/70:0:schema", "0/70:0", "0/70:1", "0/70:2:schema", "0/70:2"]);
    let names: Vec<_> =
        lines[3]["columns"].as_array().expect("columns").iter().map(|c| c["name"].clone()).collect();
    assert_eq!(names, ["id", "w", "v"]);
    assert_eq!(lines[4]["new"], serde_json::json!({"id": 3, "w": null, "v": null}));
}

#[tokio::test]
async fn streamed_transaction_waits_for_commit_and_drops_aborted_subtransactions() {
    let mut asm = Assembler::new(JsonLines, 64, None, Default::default());
    let mut out = Vec::new();
    feed(&mut asm, 1, Message::StreamStart(StreamStart { xid: 900, first_segment: true }), &mut out);
    feed(&mut asm, 2, relation(Some(900)), &mut out);
    feed(&mut asm, 3, insert(Some(900), "1"), &mut out);
    feed(&mut asm, 4, insert(Some(901), "2"), &mut out);
    feed(&mut asm, 5, insert(Some(900), "3"), &mut out);
    feed(&mut asm, 6, Message::StreamStop, &mut out);
    feed(&mut asm, 7, Message::StreamAbort(StreamAbort { xid: 900, subxid: 901, abort: None }), &mut out);
    // Another streamed transaction aborts whole.
    feed(&mut asm, 8, Message::StreamStart(StreamStart { xid: 950, first_segment: true }), &mut out);
    feed(&mut asm, 9, insert(Some(950), "99"), &mut out);
    feed(&mut asm, 10, Message::StreamStop, &mut out);
    feed(&mut asm, 11, Message::StreamAbort(StreamAbort { xid: 950, subxid: 950, abort: None }), &mut out);
    assert!(out.is_empty(), "nothing before commit");

    let commit =
        StreamCommit { xid: 900, flags: 0, commit_lsn: Lsn(0x90), end_lsn: Lsn(0x98), commit_time: 0 };
    let Step::Replay(mut stream) = feed(&mut asm, 12, Message::StreamCommit(commit), &mut out) else {
        panic!("expected a replay");
    };
    assert_eq!(stream.end, Position::new(0x98));
    while stream.replay_into(&mut out, 1).await.expect("replay") {}
    let lines = lines(&out);
    assert_eq!(lines[0]["id"], "0/90:0:schema", "the shape, announced inside the stream");
    let ids: Vec<_> = lines[1..].iter().map(|l| l["key"]["id"].as_i64().expect("id")).collect();
    assert_eq!(ids, vec![1, 3]);
    assert_eq!(lines[2]["id"], "0/90:1");
}

#[test]
fn stops_at_the_end_position() {
    let mut asm = Assembler::new(JsonLines, 1 << 20, Some(Position::new(0x40)), Default::default());
    let mut out = Vec::new();
    let step =
        feed(&mut asm, 1, Message::Begin(Begin { final_lsn: Lsn(0x41), commit_time: 0, xid: 1 }), &mut out);
    assert!(matches!(step, Step::PastEnd));
    let step =
        feed(&mut asm, 1, Message::Begin(Begin { final_lsn: Lsn(0x40), commit_time: 0, xid: 1 }), &mut out);
    assert!(matches!(step, Step::Continue));
}

#[test]
fn out_of_sequence_messages_are_errors_naming_the_lsn() {
    let mut asm = Assembler::new(JsonLines, 1 << 20, None, Default::default());
    let mut out = Vec::new();
    feed(&mut asm, 1, relation(None), &mut out);
    let error = asm.handle(Lsn(0x1234), encode(&insert(None, "1")), &mut out).expect_err("outside a txn");
    assert!(error.to_string().contains("0/1234"), "{error}");

    feed(&mut asm, 2, Message::Begin(Begin { final_lsn: Lsn(9), commit_time: 0, xid: 1 }), &mut out);
    let unknown = Message::Insert(Insert { xid: None, relation_id: 42, new: Tuple(vec![]) });
    let error = asm.handle(Lsn(3), encode(&unknown), &mut out).expect_err("unknown relation");
    assert!(error.to_string().contains("relation 42"), "{error}");

    let narrow = Message::Insert(Insert { xid: None, relation_id: 1, new: Tuple(vec![Column::Null]) });
    let error = asm.handle(Lsn(4), encode(&narrow), &mut out).expect_err("wrong width");
    assert!(error.to_string().contains("1 columns"), "{error}");

    let error = asm.handle(Lsn(5), Bytes::from_static(b"I\0"), &mut out).expect_err("truncated");
    assert!(error.to_string().contains("malformed replication message at LSN 0/5"), "{error}");
}

/// A chunk of `public.t` (id int key, v text) read as of `snapshot`.
fn chunk(snapshot: &str, rows: &str) -> crate::source::postgres::chunks::reader::ChunkRead {
    let Message::Relation(shape) = relation(None) else { unreachable!("a relation") };
    crate::source::postgres::chunks::reader::ChunkRead {
        token: "run/1".into(),
        table: "public.t".into(),
        shape,
        types: Default::default(),
        key_positions: vec![0],
        snapshot: crate::source::postgres::chunks::visibility::XidSnapshot::parse(snapshot)
            .expect("snapshot"),
        rows: vec![Bytes::from(rows.to_string())],
        row_count: rows.lines().count(),
        bytes: rows.len(),
        progress: crate::chunked::progress::TableCopy {
            since: "0/5".into(),
            after: Some(vec!["3".into()]),
            done: true,
            ..Default::default()
        },
        took: std::time::Duration::from_millis(5),
    }
}

/// Writes `chunk` whole, as the driver does piece by piece.
fn write_chunk(
    asm: &mut Assembler<JsonLines>,
    lsn: u64,
    chunk: &crate::source::postgres::chunks::reader::ChunkRead,
    out: &mut Vec<u8>,
) -> crate::chunked::rows::ChunkWritten {
    let place = asm.begin_chunk(Lsn(lsn), chunk, out).expect("begun");
    let mut written = crate::chunked::rows::ChunkWritten::default();
    for piece in &chunk.rows {
        written += asm.write_chunk_rows(Lsn(lsn), &place, piece, out).expect("written");
    }
    asm.end_chunk(chunk);
    written
}

fn committed_insert(asm: &mut Assembler<JsonLines>, at: u64, xid: u32, id: &str, out: &mut Vec<u8>) {
    feed(asm, at, Message::Begin(Begin { final_lsn: Lsn(at + 1), commit_time: 0, xid }), out);
    feed(asm, at + 1, relation(None), out);
    feed(asm, at + 2, insert(None, id), out);
    let commit = Commit { flags: 0, commit_lsn: Lsn(at + 1), end_lsn: Lsn(at + 3), commit_time: 0 };
    feed(asm, at + 3, Message::Commit(commit), out);
}

#[test]
fn a_chunk_takes_its_markers_place_without_the_rows_an_unseen_transaction_changed() {
    use crate::source::postgres::chunks::reader::CHUNK_PREFIX;
    use crate::source::postgres::protocol::pgoutput::LogicalMessage;
    let watch = crate::source::postgres::chunks::watch::KeyWatch::new(["public.t".to_string()]);
    let mut asm = Assembler::new(JsonLines, 1 << 20, None, Default::default()).watching(watch);
    let mut out = Vec::new();
    // 790 committed before the chunk's snapshot; 800 was running when it was taken.
    committed_insert(&mut asm, 0x10, 790, "1", &mut out);
    committed_insert(&mut asm, 0x20, 800, "2", &mut out);
    out.clear();
    feed(&mut asm, 0x30, Message::Begin(Begin { final_lsn: Lsn(0x90), commit_time: 0, xid: 900 }), &mut out);
    let marker = LogicalMessage {
        xid: None,
        transactional: true,
        lsn: Lsn(0x31),
        prefix: CHUNK_PREFIX.into(),
        content: Bytes::from_static(b"run/1"),
    };
    let step = feed(&mut asm, 0x31, Message::Message(marker), &mut out);
    assert!(matches!(&step, Step::Chunk { token } if token == "run/1"), "{step:?}");
    let written = write_chunk(&mut asm, 0x31, &chunk("795:801:800", "1\ta\n2\tb\n3\t\\N\n"), &mut out);
    assert_eq!(written, crate::chunked::rows::ChunkWritten { rows: 2, stale: 1 });
    let commit = Commit { flags: 0, commit_lsn: Lsn(0x90), end_lsn: Lsn(0x98), commit_time: 0 };
    assert!(matches!(feed(&mut asm, 0x98, Message::Commit(commit), &mut out), Step::Committed { .. }));
    let lines = lines(&out);
    let ops: Vec<&str> = lines.iter().map(|l| l["op"].as_str().expect("op")).collect();
    assert_eq!(
        ops,
        ["schema", "snapshot", "snapshot"],
        "the shape, then rows 1 and 3: row 2 is newer in the stream"
    );
    // A copied row's id names the copy, the table and the key: reading the chunk again repeats it.
    assert_eq!(lines[1]["id"], r#"0/5:public.t:["1"]"#);
    assert_eq!(lines[1]["commit_lsn"], "0/90");
    assert_eq!(lines[1]["new"], serde_json::json!({"id": 1, "v": "a"}));
    assert_eq!(lines[2]["id"], r#"0/5:public.t:["3"]"#);
    assert_eq!(lines[2]["key"], serde_json::json!({"id": 3}));
    assert_eq!(lines[2]["new"], serde_json::json!({"id": 3, "v": null}));
    // The table, fully copied, is no longer watched: nothing is stale for it any more.
    let later = chunk("10:10:", "2\tb\n");
    feed(&mut asm, 0xa0, Message::Begin(Begin { final_lsn: Lsn(0xb0), commit_time: 0, xid: 901 }), &mut out);
    assert_eq!(write_chunk(&mut asm, 0xa1, &later, &mut out).stale, 0);
}

#[test]
fn a_chunk_whose_shape_differs_from_the_streams_is_not_written() {
    let watch = crate::source::postgres::chunks::watch::KeyWatch::new(["public.t".to_string()]);
    let mut asm = Assembler::new(JsonLines, 1 << 20, None, Default::default()).watching(watch);
    let mut out = Vec::new();
    feed(&mut asm, 0x10, Message::Begin(Begin { final_lsn: Lsn(0x20), commit_time: 0, xid: 700 }), &mut out);
    feed(&mut asm, 0x11, relation_of(None, &[("id", 23, 1), ("v", 25, 0), ("w", 25, 0)]), &mut out);
    let error = asm.begin_chunk(Lsn(0x12), &chunk("1:1:", "1\ta\n"), &mut out).err().expect("another shape");
    assert!(matches!(error, AssembleError::ChunkShape { .. }), "{error}");
}

/// Table `public.t` as the catalog had it when the stream started.
fn known_shape() -> crate::source::postgres::relations::Signatures {
    let Message::Relation(relation) = relation(None) else { unreachable!("a Relation message") };
    [(1, crate::source::postgres::relations::Signature::of(&relation))].into()
}

#[test]
fn a_shape_that_changes_inside_the_transaction_voids_the_section() {
    let mut asm = Assembler::new(MirrorRecords, 1 << 20, None, Default::default())
        .writing_streamed_early(known_shape());
    let mut out = Vec::new();
    mirror_section(&mut asm, &mut out);
    feed_mirror(&mut asm, 6, Message::StreamStart(StreamStart { xid: 900, first_segment: false }), &mut out);
    let altered = relation_of(Some(900), &[("id", 23, 1), ("v", 25, 0), ("w", 23, 0)]);
    let Step::TentativeVoid(Some(deferred)) = feed_mirror(&mut asm, 7, altered, &mut out) else {
        panic!("a column added in the transaction voids the section");
    };
    assert!(matches!(asm.handle_deferred(*deferred, &mut out).expect("relation"), Step::Continue));

    // A table the catalog did not show when the stream started: no section keeps it.
    let mut asm = Assembler::new(MirrorRecords, 1 << 20, None, Default::default())
        .writing_streamed_early(Default::default());
    let start = Message::StreamStart(StreamStart { xid: 900, first_segment: true });
    assert!(matches!(feed_mirror(&mut asm, 1, start, &mut out), Step::TentativeBegin));
    assert!(matches!(feed_mirror(&mut asm, 2, relation(Some(900)), &mut out), Step::TentativeVoid(Some(_))));
}

/// A streamed transaction's first block, for an encoding that takes tentative lines.
fn mirror_section(asm: &mut Assembler<MirrorRecords>, out: &mut Vec<u8>) {
    let start = Message::StreamStart(StreamStart { xid: 900, first_segment: true });
    assert!(matches!(feed_mirror(asm, 1, start, out), Step::TentativeBegin));
    feed_mirror(asm, 2, relation(Some(900)), out);
    feed_mirror(asm, 3, insert(Some(900), "1"), out);
    feed_mirror(asm, 4, insert(Some(901), "2"), out);
    feed_mirror(asm, 5, Message::StreamStop, out);
}

fn feed_mirror(
    asm: &mut Assembler<MirrorRecords>,
    lsn: u64,
    message: Message,
    out: &mut Vec<u8>,
) -> Step<MirrorRecords> {
    asm.handle(Lsn(lsn), encode(&message), out).expect("handled")
}

const STREAM_COMMIT: StreamCommit =
    StreamCommit { xid: 900, flags: 0, commit_lsn: Lsn(0x90), end_lsn: Lsn(0x98), commit_time: 0 };

#[test]
fn a_streamed_transaction_alone_is_written_as_it_arrives_each_line_at_its_own_position() {
    let mut asm = Assembler::new(MirrorRecords, 1 << 20, None, Default::default())
        .writing_streamed_early(known_shape());
    let mut out = Vec::new();
    mirror_section(&mut asm, &mut out);
    let text = String::from_utf8(out.clone()).expect("utf-8");
    let heads: Vec<&str> = text.lines().map(|line| line.split('\t').next().unwrap_or_default()).collect();
    assert_eq!(
        heads,
        ["0/3", "0/3", "0/4"],
        "the shape (with its first change), then each change at its own position"
    );
    let Step::Committed { end, .. } =
        feed_mirror(&mut asm, 6, Message::StreamCommit(STREAM_COMMIT), &mut out)
    else {
        panic!("its lines are out already: committed, not replayed");
    };
    assert_eq!(end, Position::new(0x98));
    assert_eq!(out.len(), text.len(), "nothing written twice");
    assert!(asm.streamed.is_empty(), "its spill is dropped");
}

#[tokio::test]
async fn anything_between_the_blocks_voids_the_section_and_the_transaction_comes_whole_at_its_commit() {
    let mut asm = Assembler::new(MirrorRecords, 1 << 20, None, Default::default())
        .writing_streamed_early(known_shape());
    let mut out = Vec::new();
    mirror_section(&mut asm, &mut out);
    let begin = Message::Begin(Begin { final_lsn: Lsn(0x50), commit_time: 0, xid: 777 });
    let Step::TentativeVoid(Some(deferred)) = feed_mirror(&mut asm, 6, begin, &mut out) else {
        panic!("a plain transaction voids the section");
    };
    out.clear();
    assert!(matches!(asm.handle_deferred(*deferred, &mut out).expect("begin"), Step::Continue));
    feed_mirror(&mut asm, 7, insert(None, "5"), &mut out);
    let commit =
        Message::Commit(Commit { flags: 0, commit_lsn: Lsn(0x50), end_lsn: Lsn(0x58), commit_time: 0 });
    assert!(matches!(feed_mirror(&mut asm, 8, commit, &mut out), Step::Committed { .. }));
    // Its next block is not tentative: it is spilled only.
    out.clear();
    feed_mirror(&mut asm, 9, Message::StreamStart(StreamStart { xid: 900, first_segment: false }), &mut out);
    feed_mirror(&mut asm, 10, insert(Some(900), "3"), &mut out);
    feed_mirror(&mut asm, 11, Message::StreamStop, &mut out);
    assert!(out.is_empty());
    let Step::Replay(mut stream) = feed_mirror(&mut asm, 12, Message::StreamCommit(STREAM_COMMIT), &mut out)
    else {
        panic!("replayed whole from its spill");
    };
    while stream.replay_into(&mut out, 1).await.expect("replay") {}
    let text = String::from_utf8(out).expect("utf-8");
    assert_eq!(text.lines().count(), 4, "the shape and all three changes: {text}");
    assert!(text.lines().all(|line| line.starts_with("0/90\t")), "at the commit's position: {text}");
}

#[test]
fn an_abort_voids_the_section_and_a_subtransactions_first_passes_on() {
    let mut asm = Assembler::new(MirrorRecords, 1 << 20, None, Default::default())
        .writing_streamed_early(known_shape());
    let mut out = Vec::new();
    mirror_section(&mut asm, &mut out);
    let sub = Message::StreamAbort(StreamAbort { xid: 900, subxid: 901, abort: None });
    let Step::TentativeVoid(Some(deferred)) = feed_mirror(&mut asm, 6, sub, &mut out) else {
        panic!("a subtransaction's abort voids the section");
    };
    assert!(matches!(asm.handle_deferred(*deferred, &mut out).expect("abort"), Step::Continue));

    let mut asm = Assembler::new(MirrorRecords, 1 << 20, None, Default::default())
        .writing_streamed_early(known_shape());
    mirror_section(&mut asm, &mut out);
    let whole = Message::StreamAbort(StreamAbort { xid: 900, subxid: 900, abort: None });
    assert!(matches!(feed_mirror(&mut asm, 6, whole, &mut out), Step::TentativeVoid(None)));
    assert!(asm.streamed.is_empty());
}

#[test]
fn no_section_opens_while_a_table_is_copied_in_chunks_or_for_a_json_encoding() {
    let start = || Message::StreamStart(StreamStart { xid: 900, first_segment: true });
    let mut out = Vec::new();
    let mut asm = Assembler::new(MirrorRecords, 1 << 20, None, Default::default())
        .watching(KeyWatch::new(["public.t".to_string()]))
        .writing_streamed_early(known_shape());
    assert!(matches!(feed_mirror(&mut asm, 1, start(), &mut out), Step::Continue));
    let mut asm =
        Assembler::new(JsonLines, 1 << 20, None, Default::default()).writing_streamed_early(known_shape());
    assert!(matches!(feed(&mut asm, 1, start(), &mut out), Step::Continue));
}
