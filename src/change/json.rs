//! Minimal JSON writing into a byte buffer, for the hot path.
//!
//! Serde would build the same text, but writing straight into one reusable
//! buffer avoids a value tree per row. Everything written here is valid
//! JSON and never contains a raw newline, so one change is one line.

/// Appends `text` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    write_joined(out, &[text]);
}

/// Appends `parts`, joined, as one JSON string (without joining them first).
pub fn write_joined(out: &mut Vec<u8>, parts: &[&str]) {
    out.push(b'"');
    for part in parts {
        write_escaped(out, part);
    }
    out.push(b'"');
}

/// Appends `text` escaped for a JSON string, without the quotes.
fn write_escaped(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Most text needs no escaping: pass eight such bytes at a time.
        if let Some(word) = bytes.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
            if !may_need_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let byte = bytes[i];
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(format!("\\u{byte:04x}").as_bytes());
                i += 1;
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether any of the eight bytes of `word` may be `"`, `\` or a control
/// character. Never false when one is (a true answer is checked byte by
/// byte), by the borrow tricks of "Bit Twiddling Hacks" (hasless, haszero).
const fn may_need_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const fn has_zero_byte(x: u64) -> bool {
        x.wrapping_sub(ONES) & !x & HIGHS != 0
    }
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    below_space || has_zero_byte(word ^ (ONES * b'"' as u64)) || has_zero_byte(word ^ (ONES * b'\\' as u64))
}

/// Appends bytes that should be UTF-8 as a JSON string; invalid sequences
/// become U+FFFD rather than invalid JSON.
pub fn write_bytes_str(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => write_str(out, text),
        Err(_) => write_str(out, &String::from_utf8_lossy(bytes)),
    }
}

/// Appends `value` in decimal, without the formatting machinery.
pub fn write_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `"text"` for text that is known to need no escaping (LSNs, numbers).
pub fn write_plain_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

/// Whether `text` is a JSON number (and so can be written without quotes).
pub fn is_json_number(text: &[u8]) -> bool {
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < text.len() && text[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if text.first() == Some(&b'-') {
        i += 1;
    }
    match text.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if text.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(text.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(text.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_that_needs_escaping_is_escaped_wherever_it_sits() {
        // Each special byte at each offset of a 20-byte run of plain text,
        // so it lands in and across the eight-byte fast path.
        for special in ['"', '\\', '\n', '\r', '\t', '\u{1}', '\u{1f}'] {
            for at in 0..20 {
                let mut text: String = "abcdefghijklmnopqrst".into();
                text.replace_range(at..=at, &special.to_string());
                let mut written = Vec::new();
                write_str(&mut written, &text);
                let back: String = serde_json::from_slice(&written).expect("valid JSON");
                assert_eq!(back, text, "{special:?} at {at}");
            }
        }
        let mut written = Vec::new();
        write_str(&mut written, "héllo wörld, ünïcode ✓ and more text");
        assert_eq!(
            String::from_utf8(written).ok().as_deref(),
            Some("\"héllo wörld, ünïcode ✓ and more text\"")
        );
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        for value in [0u64, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut written = Vec::new();
            write_u64(&mut written, value);
            assert_eq!(String::from_utf8(written).ok(), Some(value.to_string()));
        }
        let mut written = Vec::new();
        write_bytes_str(&mut written, b"ok \xff");
        assert_eq!(String::from_utf8(written).ok().as_deref(), Some("\"ok \u{fffd}\""));
    }

    fn string(text: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn escapes_like_serde() {
        for text in ["", "plain", "quote \" and \\", "line\nbreak\r\t", "\u{1}\u{1f}", "é中🙂", "</script>"]
        {
            let ours = string(text);
            assert_eq!(serde_json::from_str::<String>(&ours).expect("valid JSON"), text);
            assert!(!ours.contains('\n'));
        }
    }

    #[test]
    fn recognises_json_numbers() {
        for yes in ["0", "-0", "42", "-17", "1.5", "1e+100", "1.5E-05", "123456789012345678901234567890"] {
            assert!(is_json_number(yes.as_bytes()), "{yes}");
        }
        for no in ["", "-", "01", "1.", ".5", "NaN", "Infinity", "-Infinity", "1e", "1x", "+1", " 1"] {
            assert!(!is_json_number(no.as_bytes()), "{no}");
        }
    }
}
