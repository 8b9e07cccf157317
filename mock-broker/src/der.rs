//! Just enough DER to read a certificate's subject common name, the one field DPS checks
//! against the clientId. Certificates arrive from the network, so every read is bounds-checked
//! and a malformed certificate yields `None`, never a panic.

/// A DER element: its tag, its contents, and what follows it.
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
    rest: &'a [u8],
}

fn element(input: &[u8]) -> Option<Element<'_>> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, after) = input.split_at(count);
        input = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if input.len() < len {
        return None;
    }
    let (contents, rest) = input.split_at(len);
    Some(Element {
        tag,
        contents,
        rest,
    })
}

/// The elements of a constructed value's contents, in order.
fn children(mut contents: &[u8]) -> impl Iterator<Item = Element<'_>> {
    std::iter::from_fn(move || {
        if contents.is_empty() {
            return None;
        }
        let e = element(contents)?;
        contents = e.rest;
        Some(e)
    })
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const EXPLICIT_VERSION: u8 = 0xa0;

/// One attribute of a distinguished name: its type, its string tag and its raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attribute {
    /// The attribute type's OID, as arcs.
    pub(crate) oid: Vec<u64>,
    /// The DER tag of the value (UTF8String, PrintableString ...).
    pub(crate) tag: u8,
    /// The value's bytes.
    pub(crate) value: Vec<u8>,
}

/// The attributes of a DER certificate's subject, in order; `None` if it does not parse.
pub(crate) fn subject_attributes(cert_der: &[u8]) -> Option<Vec<Attribute>> {
    let cert = element(cert_der).filter(|e| e.tag == SEQUENCE)?;
    let tbs = children(cert.contents)
        .next()
        .filter(|e| e.tag == SEQUENCE)?;
    let mut fields = children(tbs.contents).peekable();
    // version [0] EXPLICIT is optional; then serial, signature, issuer, validity, subject.
    if fields.peek().is_some_and(|e| e.tag == EXPLICIT_VERSION) {
        fields.next();
    }
    let subject = fields.nth(4).filter(|e| e.tag == SEQUENCE)?;
    let mut attributes = Vec::new();
    for rdn in children(subject.contents).filter(|e| e.tag == SET) {
        for attribute in children(rdn.contents).filter(|e| e.tag == SEQUENCE) {
            let mut parts = children(attribute.contents);
            let oid = parts.next().filter(|e| e.tag == OID)?;
            let value = parts.next()?;
            attributes.push(Attribute {
                oid: decode_oid(oid.contents)?,
                tag: value.tag,
                value: value.contents.to_vec(),
            });
        }
    }
    Some(attributes)
}

/// The arcs of a DER-encoded OID.
fn decode_oid(bytes: &[u8]) -> Option<Vec<u64>> {
    let (&first, rest) = bytes.split_first()?;
    let mut arcs = vec![u64::from(first / 40), u64::from(first % 40)];
    let mut value: u64 = 0;
    for &b in rest {
        value = value.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(value);
            value = 0;
        }
    }
    Some(arcs)
}

/// The subject common name of a DER certificate, if it has one and parses.
pub fn subject_common_name(cert_der: &[u8]) -> Option<String> {
    subject_attributes(cert_der)?
        .into_iter()
        .find(|a| a.oid == [2, 5, 4, 3])
        .and_then(|a| String::from_utf8(a.value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in dn {
            params.distinguished_name.push(ty.clone(), *value);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_subject_common_name() {
        let der = cert_with(&[
            (rcgen::DnType::OrganizationName, "org"),
            (rcgen::DnType::CommonName, "dev-1"),
        ]);
        assert_eq!(subject_common_name(&der).as_deref(), Some("dev-1"));
    }

    #[test]
    fn reads_every_subject_attribute_in_order() {
        let der = cert_with(&[
            (rcgen::DnType::CountryName, "NL"),
            (rcgen::DnType::CommonName, "ca"),
        ]);
        let attributes = subject_attributes(&der).unwrap();
        let oids: Vec<&[u64]> = attributes.iter().map(|a| a.oid.as_slice()).collect();
        assert_eq!(oids, vec![&[2, 5, 4, 6][..], &[2, 5, 4, 3][..]]);
        assert_eq!(attributes[1].value, b"ca");
        assert_eq!(
            decode_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            Some(vec![1, 2, 840, 113549])
        );
    }

    #[test]
    fn a_certificate_without_cn_has_none() {
        let der = cert_with(&[(rcgen::DnType::OrganizationName, "org")]);
        assert_eq!(subject_common_name(&der), None);
    }

    #[test]
    fn garbage_and_truncations_never_panic() {
        let der = cert_with(&[(rcgen::DnType::CommonName, "dev-1")]);
        for len in 0..der.len() {
            let _ = subject_common_name(&der[..len]);
        }
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(&[0xff; 64]), None);
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x55;
            let _ = subject_common_name(&flipped);
            flipped[i] ^= 0x55;
        }
    }
}
