//! The DPS API version a device announces in its MQTT username.
//!
//! The version decides what the service accepts in a register body: only
//! `2025-07-01-preview` and later read a certificate signing request. The Node SDK sends
//! `2019-03-31`, the C SDK `2021-06-01`; both stay the default for requests without a CSR, so
//! a device that does not ask for a certificate looks on the wire exactly as before.

use std::fmt;

/// An `api-version` value.
///
/// ```
/// use dps_messages::ApiVersion;
///
/// assert_eq!(ApiVersion::default().as_str(), "2019-03-31");
/// assert!(ApiVersion::V2025_07_01Preview.can_carry_csr());
/// assert!(!ApiVersion::V2021_06_01.can_carry_csr());
/// assert!(ApiVersion::from("2026-11-02-preview").can_carry_csr());
/// assert_eq!(ApiVersion::from("2021-06-01"), ApiVersion::V2021_06_01);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// `2019-03-31`, what the Node SDK sends: the default.
    #[default]
    V2019_03_31,
    /// `2021-06-01`, what the C SDK sends.
    V2021_06_01,
    /// `2025-07-01-preview`, the first version that takes a CSR and issues a certificate.
    V2025_07_01Preview,
    /// Any other version, as the service spells it. [`ApiVersion::from`] turns the three
    /// known spellings into their own variants.
    Other(String),
}

impl ApiVersion {
    /// The version as sent in the username.
    pub fn as_str(&self) -> &str {
        match self {
            Self::V2019_03_31 => "2019-03-31",
            Self::V2021_06_01 => "2021-06-01",
            Self::V2025_07_01Preview => "2025-07-01-preview",
            Self::Other(version) => version,
        }
    }

    /// Whether a register body with this version may carry a `csr`: `2025-07-01-preview` or a
    /// later date (versions are dates, so later ones compare greater as text). A version that
    /// does not start with a `YYYY-MM-DD` date cannot.
    pub fn can_carry_csr(&self) -> bool {
        can_carry_csr(self.as_str())
    }
}

/// Whether `version` (an `api-version` as sent) can carry a CSR; see
/// [`ApiVersion::can_carry_csr`].
fn can_carry_csr(version: &str) -> bool {
    let date = version.get(..10).unwrap_or("");
    let is_date = date.len() == 10
        && date.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            _ => c.is_ascii_digit(),
        });
    is_date && date >= "2025-07-01"
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ApiVersion {
    fn from(version: &str) -> Self {
        [
            Self::V2019_03_31,
            Self::V2021_06_01,
            Self::V2025_07_01Preview,
        ]
        .into_iter()
        .find(|known| known.as_str() == version)
        .unwrap_or_else(|| Self::Other(version.to_owned()))
    }
}

impl From<String> for ApiVersion {
    fn from(version: String) -> Self {
        Self::from(version.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_2025_07_01_and_later_dates_carry_a_csr() {
        for yes in [
            "2025-07-01-preview",
            "2025-07-01",
            "2026-11-02-preview",
            "2030-01-01",
        ] {
            assert!(can_carry_csr(yes), "{yes}");
        }
        for no in [
            "2019-03-31",
            "2021-06-01",
            "2021-11-01-preview",
            "2025-06-30",
            "",
            "latest",
            "2025-7-01",
            "2025/07/01",
            "20250-07-01",
            "2025-07-0",
            "é025-07-01",
        ] {
            assert!(!can_carry_csr(no), "{no}");
        }
    }

    #[test]
    fn versions_convert_and_compare() {
        assert_eq!(
            ApiVersion::from("2021-06-01".to_owned()),
            ApiVersion::V2021_06_01
        );
        assert_eq!(ApiVersion::V2021_06_01.to_string(), "2021-06-01");
        assert_eq!(
            ApiVersion::from("2025-07-01-preview"),
            ApiVersion::V2025_07_01Preview
        );
        assert_eq!(ApiVersion::from("2019-03-31"), ApiVersion::default());
        assert_eq!(ApiVersion::from("x"), ApiVersion::Other("x".into()));
        assert_eq!(ApiVersion::from("x").as_str(), "x");
    }
}
