//! Asset keys and run ids.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The name of an asset: the function name, or the `key = "..."` given to `#[asset]`.
///
/// Cheap to clone; compares, hashes and orders like the string it holds.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AssetKey(Arc<str>);

impl AssetKey {
    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as a metric label value, without copying it.
    pub(crate) fn shared(&self) -> metrics::SharedString {
        metrics::SharedString::from(std::sync::Arc::clone(&self.0))
    }

    /// Whether `key` only uses characters that selections can express.
    pub(crate) fn is_valid(key: &str) -> bool {
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
    }
}

impl Deref for AssetKey {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for AssetKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for AssetKey {
    fn from(key: &str) -> Self {
        AssetKey(key.into())
    }
}

impl From<String> for AssetKey {
    fn from(key: String) -> Self {
        AssetKey(key.into())
    }
}

impl fmt::Display for AssetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for AssetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for AssetKey {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for AssetKey {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

/// The id of one run: a random UUID unless one is given.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(Arc<str>);

impl RunId {
    /// A new random (version 4 UUID) run id.
    pub fn new() -> Self {
        RunId(uuid::Uuid::new_v4().to_string().into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<&str> for RunId {
    fn from(id: &str) -> Self {
        RunId(id.into())
    }
}

impl From<String> for RunId {
    fn from(id: String) -> Self {
        RunId(id.into())
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}
