//! Values in PostgreSQL's text form, as the Postgres source's sessions
//! print them (`DateStyle=ISO`, `TimeZone=UTC`, `extra_float_digits=3`),
//! turned into the binary form of their type: what the type's send
//! function gives, and its receive function reads in a `COPY ... (FORMAT
//! binary)`. Pure: no I/O.
//!
//! Why: a sink backend that reads a value's text runs its type's input
//! function (`numeric_in`, `timestamptz_in`); in binary it runs the receive
//! function, which mostly copies the bytes. A `COPY` of 500,000 rows of the
//! benches' table cost the sink 0.91 s of CPU in text and 0.61 s in binary
//! (BENCHMARKS.md, 2026-12-06 (night), "rows reach the sink in the
//! source's order"; in a drain: "New rows go in binary").
//!
//! Invariant: a value converts only when its text is exactly the form the
//! type's output function prints, read without loss; anything else (an
//! era, a year past 9999, an infinite timestamp, a text this code does not
//! know) is `None`, and the caller writes the rows as text instead. So a
//! value never changes on the way: the receive function of the same type
//! reads back what the input function would have made of the text. The
//! tests compare every byte with the server's own binary output.

/// The built-in types whose text this module reads, by what their binary
/// form is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    /// `text`, `varchar`, `bpchar` and `json`: the bytes themselves.
    Text,
    /// `bytea`, printed as hex (`\x0a1b`): the bytes the digits spell.
    Bytea,
    /// The bytes after a version byte, 1.
    Jsonb,
    Uuid,
    Date,
    /// `time`: microseconds since midnight.
    Time,
    /// `timestamp`, and `timestamptz` (whose text must then end in `+00`).
    Timestamp {
        utc_offset: bool,
    },
    PgLsn,
}

/// Days from 0001-01-01 to PostgreSQL's epoch, 2000-01-01.
const EPOCH_DAYS: i64 = 730_119;
const MICROS_PER_DAY: i64 = 86_400_000_000;

impl BinaryType {
    /// The type of the built-in type OID `oid`, if this module reads its text.
    pub fn of_oid(oid: u32) -> Option<BinaryType> {
        Some(match oid {
            16 => BinaryType::Bool,
            17 => BinaryType::Bytea,
            20 => BinaryType::Int8,
            21 => BinaryType::Int2,
            23 => BinaryType::Int4,
            25 | 114 | 1042 | 1043 => BinaryType::Text,
            700 => BinaryType::Float4,
            701 => BinaryType::Float8,
            1082 => BinaryType::Date,
            1083 => BinaryType::Time,
            1114 => BinaryType::Timestamp { utc_offset: false },
            1184 => BinaryType::Timestamp { utc_offset: true },
            1700 => BinaryType::Numeric,
            2950 => BinaryType::Uuid,
            3220 => BinaryType::PgLsn,
            3802 => BinaryType::Jsonb,
            _ => return None,
        })
    }

    /// Whether its values' text may hold any byte, and so comes escaped in
    /// COPY text (`text` and its kin, `json`, `jsonb`, and `bytea`, whose
    /// hex form starts with a backslash). Another type's text never holds
    /// a backslash.
    pub fn may_be_escaped(self) -> bool {
        matches!(self, BinaryType::Text | BinaryType::Jsonb | BinaryType::Bytea)
    }

    /// Appends the binary form of the value whose text is `text`; `None`
    /// (and `out` as it was, or longer with bytes the caller drops) when
    /// the text is not one this module reads exactly.
    pub fn write(self, text: &[u8], out: &mut Vec<u8>) -> Option<()> {
        match self {
            BinaryType::Bool => out.push(match text {
                b"t" => 1,
                b"f" => 0,
                _ => return None,
            }),
            BinaryType::Int2 => out.extend_from_slice(&i16::try_from(integer(text)?).ok()?.to_be_bytes()),
            BinaryType::Int4 => out.extend_from_slice(&i32::try_from(integer(text)?).ok()?.to_be_bytes()),
            BinaryType::Int8 => out.extend_from_slice(&integer(text)?.to_be_bytes()),
            BinaryType::Float4 => out.extend(parse::<f32>(text)?.to_bits().to_be_bytes()),
            BinaryType::Float8 => out.extend(parse::<f64>(text)?.to_bits().to_be_bytes()),
            BinaryType::Numeric => write_numeric(text, out)?,
            BinaryType::Text => out.extend_from_slice(text),
            BinaryType::Jsonb => {
                out.push(1);
                out.extend_from_slice(text);
            }
            BinaryType::Bytea => write_bytea(text, out)?,
            BinaryType::Uuid => write_uuid(text, out)?,
            BinaryType::Date => {
                let days = date(text)? - EPOCH_DAYS;
                out.extend(i32::try_from(days).ok()?.to_be_bytes());
            }
            BinaryType::Time => out.extend(time_of_day(text)?.to_be_bytes()),
            BinaryType::Timestamp { utc_offset } => {
                let text = if utc_offset { text.strip_suffix(b"+00")? } else { text };
                out.extend(timestamp(text)?.to_be_bytes());
            }
            BinaryType::PgLsn => {
                let slash = text.iter().position(|&b| b == b'/')?;
                let (high, low) = (hex_u32(&text[..slash])?, hex_u32(&text[slash + 1..])?);
                out.extend_from_slice(&((u64::from(high) << 32) | u64::from(low)).to_be_bytes());
            }
        }
        Some(())
    }
}

/// A decimal integer as PostgreSQL prints one: an optional `-`, then
/// digits (no `+`, no spaces), within an int8.
fn integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    // Up to 18 digits cannot overflow: no check per digit.
    if digits.len() <= 18 {
        let mut value = 0i64;
        for &byte in digits {
            let digit = byte.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            value = value * 10 + i64::from(digit);
        }
        return Some(if negative { -value } else { value });
    }
    // Counted below zero, which reaches int8's minimum.
    let mut below = 0i64;
    for &byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        below = below.checked_mul(10)?.checked_sub(i64::from(digit))?;
    }
    if negative { Some(below) } else { below.checked_neg() }
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// One half of an LSN: one to eight hex digits.
fn hex_u32(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 8 {
        return None;
    }
    text.iter().try_fold(0u32, |n, &b| Some(n << 4 | u32::from(hex_digit(b)?)))
}

fn parse<T: std::str::FromStr>(text: &[u8]) -> Option<T> {
    // Rust also reads a leading `+`, which PostgreSQL never prints.
    if text.first() == Some(&b'+') {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A `numeric`'s sign word for a positive value (zero included) and for a
/// negative one.
const POSITIVE: u16 = 0x0000;
const NEGATIVE: u16 = 0x4000;

/// `numeric`: ndigits, weight, sign, dscale (int16 each), then the digits
/// in base 10,000, without leading or trailing zero digits, as
/// `numeric_send` writes them.
fn write_numeric(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let special: Option<u16> = match text {
        b"NaN" => Some(0xC000),
        b"Infinity" => Some(0xD000),
        b"-Infinity" => Some(0xF000),
        _ => None,
    };
    if let Some(sign) = special {
        // No digits, weight 0, the sign, dscale 0.
        out.extend([0u8, 0, 0, 0]);
        out.extend(sign.to_be_bytes());
        out.extend([0u8, 0]);
        return Some(());
    }
    let (sign, unsigned) = match text.strip_prefix(b"-") {
        Some(rest) => (NEGATIVE, rest),
        None => (POSITIVE, text),
    };
    let (whole, fraction) = match unsigned.iter().position(|&b| b == b'.') {
        Some(point) => (&unsigned[..point], &unsigned[point + 1..]),
        None => (unsigned, &[][..]),
    };
    if whole.is_empty() || (unsigned.len() > whole.len() && fraction.is_empty()) {
        return None;
    }
    let dscale = i16::try_from(fraction.len()).ok().filter(|&scale| scale <= 0x3FFF)?;
    // Groups of four decimal digits, aligned on the decimal point: `lead`
    // zeros before the whole part, zeros after the fraction to fill its
    // last group. Written straight after the header (filled in last),
    // without leading or trailing zero groups.
    let header = out.len();
    out.extend_from_slice(&[0; 8]);
    let lead = (4 - whole.len() % 4) % 4;
    let mut weight = i16::try_from((whole.len() + lead) / 4).ok()? - 1;
    let (mut groups, mut group, mut filled) = (0usize, 0i16, lead);
    let mut emit = |group: i16, out: &mut Vec<u8>| {
        if groups == 0 && group == 0 {
            weight -= 1;
        } else {
            out.extend_from_slice(&group.to_be_bytes());
            groups += 1;
        }
    };
    for &byte in whole.iter().chain(fraction) {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        group = group * 10 + i16::from(digit);
        filled += 1;
        if filled == 4 {
            emit(group, out);
            (group, filled) = (0, 0);
        }
    }
    if filled > 0 {
        emit(group * [1, 1000, 100, 10][filled], out);
    }
    while groups > 0 && out.ends_with(&[0, 0]) {
        out.truncate(out.len() - 2);
        groups -= 1;
    }
    let (weight, sign) = if groups == 0 { (0, POSITIVE) } else { (weight, sign) };
    let [g0, g1] = i16::try_from(groups).ok()?.to_be_bytes();
    let ([w0, w1], [s0, s1], [d0, d1]) = (weight.to_be_bytes(), sign.to_be_bytes(), dscale.to_be_bytes());
    out[header..header + 8].copy_from_slice(&[g0, g1, w0, w1, s0, s1, d0, d1]);
    Some(())
}

/// `bytea` in hex (`bytea_output = hex`, the default): `\x`, then two
/// digits a byte. The older escape form is not read.
fn write_bytea(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let digits = text.strip_prefix(b"\\x")?;
    if digits.len() % 2 != 0 {
        return None;
    }
    for pair in digits.chunks_exact(2) {
        out.push(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?);
    }
    Some(())
}

fn write_uuid(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if text.len() != 36 || [8, 13, 18, 23].iter().any(|&dash| text[dash] != b'-') {
        return None;
    }
    let mut hex = text.iter().copied().filter(|&b| b != b'-');
    for _ in 0..16 {
        out.push(hex_digit(hex.next()?)? << 4 | hex_digit(hex.next()?)?);
    }
    hex.next().is_none().then_some(())
}

/// A run of exactly `N` ASCII digits as a number.
fn digits<const N: usize>(text: &[u8]) -> Option<i64> {
    if text.len() != N {
        return None;
    }
    let mut value = 0;
    for &byte in text {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + i64::from(digit);
    }
    Some(value)
}

/// One to six ASCII digits as a number.
fn digits_scaled(text: &[u8]) -> Option<i64> {
    text.iter().try_fold(0, |value, &byte| {
        let digit = byte.wrapping_sub(b'0');
        (digit <= 9).then(|| value * 10 + i64::from(digit))
    })
}

/// `YYYY-MM-DD` (a year of four digits, of the common era) as days since
/// 0001-01-01, checked against the month's length.
fn date(text: &[u8]) -> Option<i64> {
    if text.len() != 10 || text[4] != b'-' || text[7] != b'-' {
        return None;
    }
    let (year, month, day) = (digits::<4>(&text[..4])?, digits::<2>(&text[5..7])?, digits::<2>(&text[8..])?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let length = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if year == 0 || !(1..=length).contains(&day) {
        return None;
    }
    // Days before the year, then before the month, then the day.
    let y = year - 1;
    let before_month: i64 =
        [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][usize::try_from(month - 1).ok()?];
    Some(y * 365 + y / 4 - y / 100 + y / 400 + before_month + i64::from(leap && month > 2) + day - 1)
}

/// `YYYY-MM-DD HH:MM:SS[.f...]` as microseconds since 2000-01-01 00:00:00.
fn timestamp(text: &[u8]) -> Option<i64> {
    if text.len() < 19 || text[10] != b' ' {
        return None;
    }
    let days = date(&text[..10])? - EPOCH_DAYS;
    Some(days * MICROS_PER_DAY + time_of_day(&text[11..])?)
}

/// `HH:MM:SS[.f...]` (before midnight) as microseconds since midnight.
fn time_of_day(text: &[u8]) -> Option<i64> {
    if text.len() < 8 || text[2] != b':' || text[5] != b':' {
        return None;
    }
    let (hour, minute, second) =
        (digits::<2>(&text[..2])?, digits::<2>(&text[3..5])?, digits::<2>(&text[6..8])?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let micros = match &text[8..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=6).contains(&fraction.len()) => {
            digits_scaled(fraction)? * [0, 100_000, 10_000, 1_000, 100, 10, 1][fraction.len()]
        }
        _ => return None,
    };
    Some(((hour * 60 + minute) * 60 + second) * 1_000_000 + micros)
}

#[cfg(test)]
mod tests;
