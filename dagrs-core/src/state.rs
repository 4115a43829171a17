//! Asset state: the last materialization of each asset and whether it is stale.

use std::collections::HashMap;

use serde::Serialize;

use crate::definitions::Definitions;
use crate::error::Error;
use crate::key::AssetKey;
use crate::storage::{MaterializationRecord, Storage};

/// Why an asset is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Staleness {
    /// It was never materialized.
    NeverMaterialized,
    /// An upstream asset was materialized after it.
    UpstreamNewer {
        /// The newer upstream asset.
        upstream: AssetKey,
    },
    /// Its code version differs from the one it was materialized with.
    CodeVersionChanged {
        /// The version it was materialized with.
        materialized: Option<String>,
        /// The version in the code now.
        current: Option<String>,
    },
}

impl std::fmt::Display for Staleness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Staleness::NeverMaterialized => f.write_str("never materialized"),
            Staleness::UpstreamNewer { upstream } => {
                write!(f, "upstream `{upstream}` is newer")
            }
            Staleness::CodeVersionChanged {
                materialized,
                current,
            } => write!(
                f,
                "code version {} -> {}",
                materialized.as_deref().unwrap_or("none"),
                current.as_deref().unwrap_or("none")
            ),
        }
    }
}

/// One asset with its last materialization and staleness.
#[derive(Debug, Clone, Serialize)]
pub struct AssetState {
    /// The asset.
    pub key: AssetKey,
    /// Its group.
    pub group: Option<String>,
    /// Its last materialization, if any.
    pub latest: Option<MaterializationRecord>,
    /// Why it is stale; `None` when it is up to date.
    pub stale: Option<Staleness>,
}

/// The state of every asset of `defs` as `storage` records it, dependencies first.
///
/// An asset is stale when it was never materialized, when an upstream asset was
/// materialized (or, for a source asset, observed with a new data version) after it, or when
/// its `code_version` differs from the one recorded with its last materialization. Source
/// assets are never stale.
pub(crate) async fn asset_states(
    defs: &Definitions,
    storage: &dyn Storage,
) -> Result<Vec<AssetState>, Error> {
    let latest: HashMap<AssetKey, MaterializationRecord> = storage
        .latest_materializations()
        .await?
        .into_iter()
        .map(|m| (m.asset.clone(), m))
        .collect();
    Ok(defs
        .assets()
        .map(|spec| {
            let own = latest.get(spec.key());
            let stale = match own {
                // Something else writes a source asset: dagrs never makes it fresh.
                _ if spec.kind().is_source() => None,
                None => Some(Staleness::NeverMaterialized),
                Some(own) if own.code_version.as_deref() != spec.code_version_text() => {
                    Some(Staleness::CodeVersionChanged {
                        materialized: own.code_version.clone(),
                        current: spec.code_version_text().map(str::to_owned),
                    })
                }
                Some(own) => spec
                    .deps()
                    .iter()
                    .find(|dep| {
                        latest
                            .get(*dep)
                            .is_some_and(|up| up.timestamp > own.timestamp)
                    })
                    .map(|dep| Staleness::UpstreamNewer {
                        upstream: dep.clone(),
                    }),
            };
            AssetState {
                key: spec.key().clone(),
                group: spec.group_name().map(str::to_owned),
                latest: own.cloned(),
                stale,
            }
        })
        .collect())
}
