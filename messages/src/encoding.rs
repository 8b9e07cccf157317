//! Percent-encoding, written out because the rules differ per field and we need to control them.
//!
//! Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`) is encoded, like
//! JavaScript's `encodeURIComponent` minus its few extra safe marks. The hex case matters for the
//! SAS `sr` field: the signature is computed over the encoded text, and the Azure SDKs' known
//! answers use lower case there.

/// Which case to write the hex digits of an escape in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HexCase {
    Upper,
    Lower,
}

/// Percent-encodes `input` (as UTF-8), leaving only unreserved characters as they are.
pub(crate) fn percent_encode(input: &str, case: HexCase) -> String {
    let digits: &[u8; 16] = match case {
        HexCase::Upper => b"0123456789ABCDEF",
        HexCase::Lower => b"0123456789abcdef",
    };
    let mut out = String::with_capacity(input.len());
    for &byte in input.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(digits[usize::from(byte >> 4)] as char);
            out.push(digits[usize::from(byte & 0x0f)] as char);
        }
    }
    out
}

/// Decodes `%XX` escapes (either case). Unlike form decoding, `+` stays `+`: a base64 signature
/// sent unencoded must not turn into spaces. A malformed escape is kept as text; bytes that
/// decode to invalid UTF-8 become U+FFFD.
///
/// ```
/// use dps_messages::service::percent_decode;
///
/// assert_eq!(percent_decode("reg%3A1%2Fa+b%zz"), "reg:1/a+b%zz");
/// ```
pub fn percent_decode(input: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_unreserved_characters_alone() {
        assert_eq!(percent_encode("aZ09-_.~", HexCase::Upper), "aZ09-_.~");
    }

    #[test]
    fn encodes_reserved_characters_in_the_requested_case() {
        assert_eq!(percent_encode("a/b c+=", HexCase::Upper), "a%2Fb%20c%2B%3D");
        assert_eq!(percent_encode("a/b", HexCase::Lower), "a%2fb");
    }

    #[test]
    fn decodes_both_cases_and_keeps_plus_and_bad_escapes() {
        assert_eq!(percent_decode("a%2fb%2Fc+d%3d%zz%4"), "a/b/c+d=%zz%4");
        // A sign is not a hex digit, though `u8::from_str_radix` would take one.
        assert_eq!(percent_decode("%+f%-1"), "%+f%-1");
        assert_eq!(
            percent_decode(&percent_encode("é x", HexCase::Lower)),
            "é x"
        );
    }

    #[test]
    fn encodes_multibyte_utf8_bytewise() {
        assert_eq!(percent_encode("é", HexCase::Upper), "%C3%A9");
    }
}
