//! Minimal JSON writing into a byte buffer, for the hot path.
//!
//! Serde would build the same text, but writing straight into one reusable
//! buffer avoids a value tree per row. Everything written here is valid
//! JSON and never contains a raw newline, so one change is one line.

/// Appends `text` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(format!("\\u{byte:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends bytes that should be UTF-8 as a JSON string; invalid sequences
/// become U+FFFD rather than invalid JSON.
pub fn write_bytes_str(out: &mut Vec<u8>, bytes: &[u8]) {
    write_str(out, &String::from_utf8_lossy(bytes));
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
