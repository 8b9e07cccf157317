//! Writing DER, the few shapes this crate builds itself: a PKCS#8 wrapper around a key openssl
//! wrote in another form, a public key's `SubjectPublicKeyInfo`, an ECDSA signature.

/// One DER element: `tag`, the definite length of `contents`, `contents`.
pub(crate) fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_take_the_long_form_from_128_bytes() {
        assert_eq!(der(0x04, &[7; 3]), [0x04, 3, 7, 7, 7]);
        assert_eq!(der(0x04, &[7]), [0x04, 1, 7]);
        assert_eq!(der(0x04, &[0; 127])[..2], [0x04, 127]);
        assert_eq!(der(0x04, &[0; 128])[..3], [0x04, 0x81, 128]);
        assert_eq!(der(0x04, &[0; 0x100])[..4], [0x04, 0x82, 0x01, 0x00]);
        assert_eq!(der(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }
}
