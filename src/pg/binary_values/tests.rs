use super::*;

fn binary(ty: BinaryType, text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    ty.write(text.as_bytes(), &mut out).map(|()| out)
}

#[test]
fn numeric_groups_four_digits_on_each_side_of_the_point() {
    let numeric = |text| binary(BinaryType::Numeric, text);
    // ndigits, weight, sign, dscale, digits.
    let words = |w: &[i16]| w.iter().flat_map(|n| n.to_be_bytes()).collect::<Vec<_>>();
    assert_eq!(numeric("12345.678"), Some(words(&[3, 1, 0, 3, 1, 2345, 6780])));
    assert_eq!(numeric("-0.0001"), Some(words(&[1, -1, 0x4000, 4, 1])));
    assert_eq!(numeric("0.00"), Some(words(&[0, 0, 0, 2])));
    assert_eq!(numeric("-0"), Some(words(&[0, 0, 0, 0])));
    assert_eq!(numeric("100000000"), Some(words(&[1, 2, 0, 0, 1])));
    assert_eq!(numeric("NaN"), Some(words(&[0, 0, 0xC000u16 as i16, 0])));
    for text in ["", "-", "1.", ".5", "1e5", "+1", "1.2.3", " 1", "１"] {
        assert_eq!(numeric(text), None, "{text:?}");
    }
}

#[test]
fn dates_and_timestamps_count_from_2000_and_refuse_what_they_cannot_read() {
    let micros = |text| binary(BinaryType::Timestamp { utc_offset: true }, text);
    assert_eq!(micros("2000-01-01 00:00:00+00"), Some(0i64.to_be_bytes().to_vec()));
    assert_eq!(micros("2000-01-02 00:00:01.5+00"), Some((MICROS_PER_DAY + 1_500_000).to_be_bytes().to_vec()));
    assert_eq!(binary(BinaryType::Date, "1999-12-31"), Some((-1i32).to_be_bytes().to_vec()));
    assert_eq!(binary(BinaryType::Date, "2024-03-01"), Some(8826i32.to_be_bytes().to_vec()));
    for text in [
        "2000-01-01 00:00:00",
        "2000-01-01 00:00:00+01",
        "infinity",
        "0044-03-15 12:00:00+00 BC",
        "12000-01-01 00:00:00+00",
        "2023-02-29 00:00:00+00",
        "2000-01-01 24:00:00+00",
        "2000-01-01 00:00:00.+00",
        "2000-01-01 00:00:00.1234567+00",
    ] {
        assert_eq!(micros(text), None, "{text:?}");
    }
}

#[test]
fn scalars_refuse_text_their_output_function_never_prints() {
    assert_eq!(binary(BinaryType::Int4, "+1"), None);
    assert_eq!(binary(BinaryType::Int8, "-9223372036854775808"), Some(i64::MIN.to_be_bytes().to_vec()));
    // Either side of the unchecked loop's reach (18 digits).
    let int8 = |n: i64| Some(n.to_be_bytes().to_vec());
    for n in [999_999_999_999_999_999, -999_999_999_999_999_999, 1_000_000_000_000_000_000, i64::MAX, 0] {
        assert_eq!(binary(BinaryType::Int8, &n.to_string()), int8(n), "{n}");
    }
    assert_eq!(binary(BinaryType::Int8, "-0"), int8(0));
    assert_eq!(binary(BinaryType::Int8, "12a"), None);
    for text in ["9223372036854775808", "-", "", "1 ", "1.0", "0x1"] {
        assert_eq!(binary(BinaryType::Int8, text), None, "{text:?}");
    }
    assert_eq!(binary(BinaryType::Int2, "40000"), None);
    assert_eq!(binary(BinaryType::Bool, "true"), None);
    assert_eq!(binary(BinaryType::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"), None);
    assert_eq!(binary(BinaryType::PgLsn, "0/+1"), None);
    assert_eq!(binary(BinaryType::PgLsn, "1/A"), Some(0x1_0000_000Au64.to_be_bytes().to_vec()));
    assert_eq!(
        binary(BinaryType::Float8, "-Infinity"),
        Some(f64::NEG_INFINITY.to_bits().to_be_bytes().to_vec())
    );
}

#[test]
fn bytea_is_read_in_hex_only_and_time_before_midnight_only() {
    assert_eq!(binary(BinaryType::Bytea, "\\x"), Some(vec![]));
    assert_eq!(binary(BinaryType::Bytea, "\\x0aFF5c"), Some(vec![0x0a, 0xff, 0x5c]));
    for text in ["\\x0", "\\xzz", "abc", "\\000", ""] {
        assert_eq!(binary(BinaryType::Bytea, text), None, "{text:?}");
    }
    assert_eq!(binary(BinaryType::Time, "00:00:01.5"), Some(1_500_000i64.to_be_bytes().to_vec()));
    for text in ["24:00:00", "12:00", "12:00:00+00", "12:00:00.1234567"] {
        assert_eq!(binary(BinaryType::Time, text), None, "{text:?}");
    }
}
