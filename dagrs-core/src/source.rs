//! Source assets: assets something else writes. An *external* asset is only declared — a
//! dependency where lineage starts; an *observable* one has a function that reads its
//! [`DataVersion`], so what depends on it becomes stale when the version changes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of asset a spec describes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetKind {
    /// dagrs materializes it: the function computes its value.
    #[default]
    Materializable,
    /// Written elsewhere and only declared: never selected, never run.
    External,
    /// Written elsewhere; its function observes a [`DataVersion`] when selected.
    Observable,
}

crate::text::named!(AssetKind, "asset kind", {
    Materializable => "materializable",
    External => "external",
    Observable => "observable",
});

impl AssetKind {
    /// Whether dagrs never materializes it (an external or observable source).
    pub fn is_source(self) -> bool {
        self != AssetKind::Materializable
    }
}

/// The version of a source asset's data, as its observation function sees it: a last
/// modification time, a row count, a hash — anything that changes when the data does.
///
/// ```
/// use dagrs_core::DataVersion;
///
/// let version = DataVersion::new("2026-11-30T12:00:00Z/8640");
/// assert_eq!(version.as_str(), "2026-11-30T12:00:00Z/8640");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DataVersion(String);

impl DataVersion {
    /// A version from any text.
    pub fn new(version: impl Into<String>) -> Self {
        DataVersion(version.into())
    }

    /// The version's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DataVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for DataVersion {
    fn from(version: String) -> Self {
        DataVersion(version)
    }
}

impl From<&str> for DataVersion {
    fn from(version: &str) -> Self {
        DataVersion(version.to_owned())
    }
}
