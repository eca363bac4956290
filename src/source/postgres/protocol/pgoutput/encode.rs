//! Test-only encoder: the inverse of the decoder, for round-trip properties
//! and hand-written fixtures.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;

pub(crate) fn encode(message: &Message) -> Bytes {
    let mut out = BytesMut::new();
    match message {
        Message::Begin(b) => {
            out.put_u8(b'B');
            out.put_u64(b.final_lsn.0);
            out.put_i64(b.commit_time);
            out.put_u32(b.xid);
        }
        Message::Commit(c) => {
            out.put_u8(b'C');
            out.put_u8(c.flags);
            out.put_u64(c.commit_lsn.0);
            out.put_u64(c.end_lsn.0);
            out.put_i64(c.commit_time);
        }
        Message::Origin(o) => {
            out.put_u8(b'O');
            out.put_u64(o.commit_lsn.0);
            cstr(&mut out, &o.name);
        }
        Message::Relation(rel) => {
            out.put_u8(b'R');
            xid(&mut out, rel.xid);
            out.put_u32(rel.id);
            cstr(&mut out, &rel.namespace);
            cstr(&mut out, &rel.name);
            out.put_u8(rel.replica_identity);
            out.put_i16(rel.columns.len() as i16);
            for column in &rel.columns {
                out.put_u8(column.flags);
                cstr(&mut out, &column.name);
                out.put_u32(column.type_oid);
                out.put_i32(column.type_modifier);
            }
        }
        Message::Type(t) => {
            out.put_u8(b'Y');
            xid(&mut out, t.xid);
            out.put_u32(t.oid);
            cstr(&mut out, &t.namespace);
            cstr(&mut out, &t.name);
        }
        Message::Insert(i) => {
            out.put_u8(b'I');
            xid(&mut out, i.xid);
            out.put_u32(i.relation_id);
            out.put_u8(b'N');
            tuple(&mut out, &i.new);
        }
        Message::Update(u) => {
            out.put_u8(b'U');
            xid(&mut out, u.xid);
            out.put_u32(u.relation_id);
            if let Some(old) = &u.old {
                old_tuple(&mut out, old);
            }
            out.put_u8(b'N');
            tuple(&mut out, &u.new);
        }
        Message::Delete(d) => {
            out.put_u8(b'D');
            xid(&mut out, d.xid);
            out.put_u32(d.relation_id);
            old_tuple(&mut out, &d.old);
        }
        Message::Truncate(t) => {
            out.put_u8(b'T');
            xid(&mut out, t.xid);
            out.put_u32(t.relation_ids.len() as u32);
            out.put_u8(t.options);
            for id in &t.relation_ids {
                out.put_u32(*id);
            }
        }
        Message::Message(m) => {
            out.put_u8(b'M');
            xid(&mut out, m.xid);
            out.put_u8(u8::from(m.transactional));
            out.put_u64(m.lsn.0);
            cstr(&mut out, &m.prefix);
            out.put_i32(m.content.len() as i32);
            out.put_slice(&m.content);
        }
        Message::StreamStart(s) => {
            out.put_u8(b'S');
            out.put_u32(s.xid);
            out.put_u8(u8::from(s.first_segment));
        }
        Message::StreamStop => out.put_u8(b'E'),
        Message::StreamCommit(c) => {
            out.put_u8(b'c');
            out.put_u32(c.xid);
            out.put_u8(c.flags);
            out.put_u64(c.commit_lsn.0);
            out.put_u64(c.end_lsn.0);
            out.put_i64(c.commit_time);
        }
        Message::StreamAbort(a) => {
            out.put_u8(b'A');
            out.put_u32(a.xid);
            out.put_u32(a.subxid);
            if let Some((lsn, time)) = a.abort {
                out.put_u64(lsn.0);
                out.put_i64(time);
            }
        }
    }
    out.freeze()
}

fn xid(out: &mut BytesMut, xid: Option<u32>) {
    if let Some(xid) = xid {
        out.put_u32(xid);
    }
}

fn cstr(out: &mut BytesMut, text: &str) {
    out.put_slice(text.as_bytes());
    out.put_u8(0);
}

fn old_tuple(out: &mut BytesMut, old: &OldTuple) {
    match old {
        OldTuple::Key(t) => {
            out.put_u8(b'K');
            tuple(out, t);
        }
        OldTuple::Full(t) => {
            out.put_u8(b'O');
            tuple(out, t);
        }
    }
}

fn tuple(out: &mut BytesMut, tuple: &Tuple) {
    out.put_i16(tuple.0.len() as i16);
    for column in &tuple.0 {
        match column {
            Column::Null => out.put_u8(b'n'),
            Column::Unchanged => out.put_u8(b'u'),
            Column::Text(value) => {
                out.put_u8(b't');
                out.put_i32(value.len() as i32);
                out.put_slice(value);
            }
            Column::Binary(value) => {
                out.put_u8(b'b');
                out.put_i32(value.len() as i32);
                out.put_slice(value);
            }
        }
    }
}
