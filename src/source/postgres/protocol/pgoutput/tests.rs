use bytes::Bytes;
use proptest::prelude::*;

use super::encode::encode;
use super::*;

fn decode_with(message_bytes: Bytes, in_stream: bool) -> Result<Message, DecodeError> {
    let mut decoder = Decoder { in_stream };
    decoder.decode(message_bytes)
}

/// Whether the message carries the streamed-transaction xid prefix.
fn streamed(message: &Message) -> bool {
    match message {
        Message::Relation(m) => m.xid.is_some(),
        Message::Type(m) => m.xid.is_some(),
        Message::Insert(m) => m.xid.is_some(),
        Message::Update(m) => m.xid.is_some(),
        Message::Delete(m) => m.xid.is_some(),
        Message::Truncate(m) => m.xid.is_some(),
        Message::Message(m) => m.xid.is_some(),
        _ => false,
    }
}

#[test]
fn decodes_a_hand_written_insert() {
    // 'I', relation 16384, 'N', 2 columns: text "42", null.
    let raw: &[u8] = b"I\x00\x00\x40\x00N\x00\x02t\x00\x00\x00\x0242n";
    let message = decode_with(Bytes::from_static(raw), false).expect("valid insert");
    assert_eq!(
        message,
        Message::Insert(Insert {
            xid: None,
            relation_id: 16384,
            new: Tuple(vec![Column::Text(Bytes::from_static(b"42")), Column::Null]),
        })
    );
}

#[test]
fn stream_block_switches_xid_prefix() {
    let mut decoder = Decoder::new();
    let start = encode(&Message::StreamStart(StreamStart { xid: 7, first_segment: true }));
    decoder.decode(start).expect("stream start");
    let insert =
        Message::Insert(Insert { xid: Some(9), relation_id: 1, new: Tuple(vec![Column::Unchanged]) });
    assert_eq!(decoder.decode(encode(&insert)), Ok(insert));
    decoder.decode(encode(&Message::StreamStop)).expect("stream stop");
    let plain = Message::Insert(Insert { xid: None, relation_id: 1, new: Tuple(vec![]) });
    assert_eq!(decoder.decode(encode(&plain)), Ok(plain));
}

#[test]
fn stream_abort_with_and_without_protocol_4_fields() {
    for abort in [None, Some((Lsn(0x99), 12345))] {
        let message = Message::StreamAbort(StreamAbort { xid: 5, subxid: 6, abort });
        assert_eq!(decode_with(encode(&message), false), Ok(message));
    }
}

#[test]
fn rejects_what_the_format_does_not_allow() {
    let cases: &[&[u8]] = &[
        b"",
        b"Z",
        b"I\x00\x00\x00\x01X\x00\x00",
        b"I\x00\x00\x00\x01N\xff\xff",
        b"I\x00\x00\x00\x01N\x00\x01t\xff\xff\xff\xff",
        b"I\x00\x00\x00\x01N\x00\x01q",
        b"D\x00\x00\x00\x01N\x00\x00",
        b"U\x00\x00\x00\x01K\x00\x00X\x00\x00",
        b"T\xff\xff\xff\xff\x00",
        b"E\x00",
        b"R\x00\x00\x00\x01public",
    ];
    for raw in cases {
        assert!(decode_with(Bytes::from_static(raw), false).is_err(), "{raw:?} decoded");
    }
}

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

fn text() -> impl Strategy<Value = String> {
    "[a-z_\u{e9}\u{4e2d}]{0,12}"
}

fn column() -> impl Strategy<Value = Column> {
    prop_oneof![
        Just(Column::Null),
        Just(Column::Unchanged),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Column::Text(Bytes::from(v))),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Column::Binary(Bytes::from(v))),
    ]
}

fn tuple() -> impl Strategy<Value = Tuple> {
    proptest::collection::vec(column(), 0..8).prop_map(Tuple)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![tuple().prop_map(OldTuple::Key), tuple().prop_map(OldTuple::Full)]
}

fn message() -> impl Strategy<Value = Message> {
    let xid = proptest::option::of(any::<u32>());
    prop_oneof![
        (lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| Message::Begin(Begin {
            final_lsn,
            commit_time,
            xid
        })),
        (any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(|(flags, commit_lsn, end_lsn, commit_time)| {
            Message::Commit(Commit { flags, commit_lsn, end_lsn, commit_time })
        }),
        (lsn(), text()).prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name })),
        (
            xid.clone(),
            any::<u32>(),
            text(),
            text(),
            any::<u8>(),
            proptest::collection::vec((any::<u8>(), text(), any::<u32>(), any::<i32>()), 0..6)
        )
            .prop_map(|(xid, id, namespace, name, replica_identity, columns)| {
                let columns = columns
                    .into_iter()
                    .map(|(flags, name, type_oid, type_modifier)| ColumnDef {
                        flags,
                        name,
                        type_oid,
                        type_modifier,
                    })
                    .collect();
                Message::Relation(Relation { xid, id, namespace, name, replica_identity, columns })
            }),
        (xid.clone(), any::<u32>(), text(), text())
            .prop_map(|(xid, oid, namespace, name)| Message::Type(TypeInfo { xid, oid, namespace, name })),
        (xid.clone(), any::<u32>(), tuple()).prop_map(|(xid, relation_id, new)| Message::Insert(Insert {
            xid,
            relation_id,
            new
        })),
        (xid.clone(), any::<u32>(), proptest::option::of(old_tuple()), tuple())
            .prop_map(|(xid, relation_id, old, new)| Message::Update(Update { xid, relation_id, old, new })),
        (xid.clone(), any::<u32>(), old_tuple())
            .prop_map(|(xid, relation_id, old)| Message::Delete(Delete { xid, relation_id, old })),
        (xid.clone(), any::<u8>(), proptest::collection::vec(any::<u32>(), 0..5)).prop_map(
            |(xid, options, relation_ids)| Message::Truncate(Truncate { xid, options, relation_ids })
        ),
        (xid, any::<bool>(), lsn(), text(), proptest::collection::vec(any::<u8>(), 0..50)).prop_map(
            |(xid, transactional, lsn, prefix, content)| {
                Message::Message(LogicalMessage {
                    xid,
                    transactional,
                    lsn,
                    prefix,
                    content: Bytes::from(content),
                })
            }
        ),
        (any::<u32>(), any::<bool>())
            .prop_map(|(xid, first_segment)| Message::StreamStart(StreamStart { xid, first_segment })),
        Just(Message::StreamStop),
        (any::<u32>(), any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(xid, flags, commit_lsn, end_lsn, commit_time)| {
                Message::StreamCommit(StreamCommit { xid, flags, commit_lsn, end_lsn, commit_time })
            }
        ),
        (any::<u32>(), any::<u32>(), proptest::option::of((lsn(), any::<i64>())))
            .prop_map(|(xid, subxid, abort)| Message::StreamAbort(StreamAbort { xid, subxid, abort })),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(message in message()) {
        let in_stream = streamed(&message);
        prop_assert_eq!(decode_with(encode(&message), in_stream), Ok(message));
    }

    #[test]
    fn a_begins_commit_time_is_peeked_and_nothing_else_has_one(message in message()) {
        let bytes = encode(&message);
        let expected = match &message {
            Message::Begin(begin) => Some(begin.commit_time),
            _ => None,
        };
        prop_assert_eq!(Begin::peek_commit_time(&bytes), expected);
        prop_assert_eq!(Begin::peek_commit_time(&bytes[..bytes.len().min(16)]), None);
    }

    #[test]
    fn only_stream_start_and_stop_are_block_edges(message in message()) {
        let expected = match &message {
            Message::StreamStart(_) => Some(BlockEdge::Start),
            Message::StreamStop => Some(BlockEdge::Stop),
            _ => None,
        };
        prop_assert_eq!(BlockEdge::peek(&encode(&message)), expected);
    }

    #[test]
    fn truncated_messages_are_errors_not_panics(message in message(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&message);
        let len = cut.index(bytes.len());
        let in_stream = streamed(&message);
        let result = decode_with(bytes.slice(..len), in_stream);
        // A Stream Abort without its optional protocol-4 tail is still valid.
        if !matches!(message, Message::StreamAbort(_) | Message::StreamStop) {
            prop_assert!(result.is_err());
        }
    }

    #[test]
    fn corrupted_messages_never_panic(
        message in message(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        in_stream in any::<bool>(),
    ) {
        let mut bytes = encode(&message).to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let _ = decode_with(Bytes::from(bytes), in_stream);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), in_stream in any::<bool>()) {
        let _ = decode_with(Bytes::from(bytes), in_stream);
    }
}
