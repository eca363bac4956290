//! A query parameter sent in text format, whatever the type the server
//! gave it: the server reads it with that type's input function, as it
//! reads a field of COPY text. So a statement with such parameters accepts
//! exactly the values a COPY into the same columns does, user types and
//! typmods included (an `INSERT` then coerces to the column's typmod, as
//! COPY does). Pure: no I/O.

use bytes::BytesMut;
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

/// A value in its text form; `None` is SQL NULL.
#[derive(Debug, Clone, Copy)]
pub struct TextParam<'a>(pub Option<&'a [u8]>);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            None => Ok(IsNull::Yes),
            Some(text) => {
                out.extend_from_slice(text);
                Ok(IsNull::No)
            }
        }
    }

    /// Any type: the server checks the text.
    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_goes_as_its_text_and_null_as_null() {
        let mut out = BytesMut::new();
        let value = TextParam(Some(b"2026-12-06 10:00:00+00"));
        assert!(matches!(value.to_sql(&Type::TIMESTAMPTZ, &mut out), Ok(IsNull::No)));
        assert_eq!(&out[..], b"2026-12-06 10:00:00+00");
        assert!(matches!(TextParam(None).to_sql(&Type::INT4, &mut out), Ok(IsNull::Yes)));
        assert!(matches!(value.encode_format(&Type::JSONB), Format::Text));
        assert!(<TextParam as ToSql>::accepts(&Type::NUMERIC));
    }
}
